"""Figure helpers: inverse normalisation, colour maps, projections."""

import numpy as np
import pytest
import matplotlib

matplotlib.use("Agg")

from dapo import plots  # noqa: E402


def test_denormalise_inverts_clip_normalisation():
    rng = np.random.default_rng(0)
    rgb = rng.random((5, 7, 3))
    normalised = ((rgb - plots.CLIP_MEAN) / plots.CLIP_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(plots.denormalise(normalised), rgb, atol=1e-12)


def test_type_colormap_keeps_normal_transparent():
    cmap = plots.type_colormap(4)
    assert cmap(0)[3] == 0.0
    assert all(cmap(i)[3] > 0 for i in (1, 2, 3))
    assert len({cmap(i) for i in range(4)}) == 4


def test_projection_shapes_and_determinism():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 16))
    a = plots.project_2d(x, "tsne", seed=0)
    assert a.shape == (24, 2)
    np.testing.assert_allclose(a, plots.project_2d(x, "tsne", seed=0))
    with pytest.raises(ValueError, match="unknown projection"):
        plots.project_2d(x, "pca")


def test_sample_grid_and_qualitative_draw_every_panel():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(3, 8, 8))
    mask = np.zeros((8, 8), int)
    mask[2:4, 2:4] = 1
    samples = [dict(image=img, type_mask=mask, product="p", defects=("scratch",))] * 3
    fig = plots.sample_grid(samples, ["normal", "scratch"], ncols=2)
    assert sum(ax.get_title() != "" for ax in fig.axes) == 3
    fig = plots.qualitative([img, img], [mask, mask], [mask, 0 * mask], ["normal", "scratch"], ["a", "b"])
    assert len(fig.axes) == 6
