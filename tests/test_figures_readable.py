"""Figures read without the code: distinguishable, stable defect colours and the SYNTHETIC banner."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from dapo.experiments import plots  # noqa: E402
from dapo.experiments.reporting import SYNTHETIC_BANNER, Provenance, save_figure  # noqa: E402
from dapo.synthetic.corpus import DEFECT_ORDER  # noqa: E402

#: CIE76 delta-E: about 2.3 is just noticeable; 20 is a clearly different colour.
MIN_SYNTHETIC_DELTA_E = 40.0
MIN_ANY_DELTA_E = 20.0


def _min_pairwise(colours) -> float:
    return min(float(plots.delta_e(a, b)) for a, b in itertools.combinations(colours, 2))


def test_lab_conversion_matches_known_values():
    np.testing.assert_allclose(plots.srgb_to_lab((1.0, 1.0, 1.0)), (100.0, 0.0, 0.0), atol=0.1)
    np.testing.assert_allclose(plots.srgb_to_lab((1.0, 0.0, 0.0)), (53.24, 80.09, 67.20), atol=0.2)


def test_every_synthetic_defect_type_is_clearly_distinguishable():
    colours = [plots.defect_colour(d) for d in DEFECT_ORDER]
    assert _min_pairwise(colours) >= MIN_SYNTHETIC_DELTA_E
    assert min(float(plots.delta_e(c, plots.NORMAL_COLOUR)) for c in colours) >= MIN_SYNTHETIC_DELTA_E
    # the pairs the issue found near-identical
    for a, b in (("bent", "burnt"), ("crack", "missing"), ("scratch", "spot"), ("hole", "missing")):
        assert float(plots.delta_e(plots.defect_colour(a), plots.defect_colour(b))) >= MIN_SYNTHETIC_DELTA_E


def test_every_knowledge_base_type_has_its_own_colour():
    from dapo.data.knowledge import _defect_registry

    colours = [plots.defect_colour(d) for d in sorted(_defect_registry())]
    assert _min_pairwise(colours) >= MIN_ANY_DELTA_E


def test_a_type_keeps_its_colour_whatever_the_vocabulary():
    small = plots.type_colormap(("normal", "spot", "bent"))
    large = plots.type_colormap(("normal", "bent", "crack", "hole", "spot*"))
    assert small(1)[:3] == large(4)[:3] and small(2)[:3] == large(1)[:3]
    assert small(0)[3] == 0.0                               # normal stays transparent
    assert plots.defect_colour("spot*") == plots.defect_colour("spot")
    assert plots.defect_colour("smudge") == plots.defect_colour("smudge")   # free words: stable


@pytest.mark.parametrize("profile, banner", [("synthetic", True), ("paper", False)])
def test_saved_figure_carries_the_synthetic_banner(tmp_path, profile, banner):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, "f", tmp_path, Provenance.create(profile, 0, "b", "p"))
    assert (SYNTHETIC_BANNER in [t.get_text() for t in fig.texts]) is banner
    assert (Image.open(path).text.get("Title") == SYNTHETIC_BANNER) is banner
    plt.close(fig)
