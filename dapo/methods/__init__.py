"""Every method of the companion behind one contract (:mod:`dapo.methods.contract`) and one
registry (:mod:`dapo.methods.registry`).

``make_model("winclip", backbone)``, ``preset("dapo", seed=1, lam=8)``, ``available()``. The
DAPO family (:mod:`dapo.methods.dapo`) holds DAPO, its ablation presets, MultiADS(-F),
AnomalyCLIP and CLIP-AC; the other methods are modules of their own.
"""

from __future__ import annotations

from dapo.methods import anomalyclip, clip_ac, multiads  # noqa: E402, F401

# importing a method module registers its presets (order = the order of available()'s tables)
from dapo.methods.dapo import presets as _dapo  # noqa: E402, F401
from dapo.methods.registry import (  # noqa: F401
    FAMILIES,
    METHODS,
    Method,
    Preset,
    available,
    config_fields,
    config_for,
    get,
    make_model,
    preset,
    register,
    training_for,
)

# isort: split
from dapo.methods import aprilgan, winclip  # noqa: E402, F401
