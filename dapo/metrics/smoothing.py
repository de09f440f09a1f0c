"""Optional Gaussian smoothing of binary anomaly maps before pixel metrics.

The DAPO paper does not say whether maps are smoothed. AnomalyCLIP, whose binary zero-shot
protocol DAPO's Table 3 follows ("following baselines [28, 41]"), filters every map with a
Gaussian of sigma 4 pixels (``scipy.ndimage.gaussian_filter``, reflect borders, truncate 4);
MultiADS's published test scripts do not smooth. The paper profile uses
:data:`PAPER_SMOOTHING_SIGMA` for binary maps; multi-type probability maps are never smoothed
(the MultiADS multi-type protocol does not smooth them).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Gaussian sigma (pixels of the evaluated map) for binary anomaly maps in the paper profile.
PAPER_SMOOTHING_SIGMA = 4.0


def gaussian_smooth(maps: np.ndarray, sigma: float | None) -> np.ndarray:
    """Smooth each ``(H, W)`` map of an ``(N, H, W)`` stack independently; ``None`` or 0 returns ``maps``."""
    if not sigma:
        return maps
    if sigma < 0:
        raise ValueError(f"smoothing sigma must be >= 0, got {sigma}")
    return ndimage.gaussian_filter(np.asarray(maps, dtype=np.float32), sigma=(0.0, sigma, sigma))
