"""Figure helpers: inverse normalisation, colour maps, projections."""

import matplotlib
import numpy as np
import open_clip
import pytest

matplotlib.use("Agg")

from dapo.experiments import plots  # noqa: E402


def test_denormalise_inverts_clip_normalisation():
    rng = np.random.default_rng(0)
    rgb = rng.random((5, 7, 3))
    mean, std = np.array(open_clip.OPENAI_DATASET_MEAN), np.array(open_clip.OPENAI_DATASET_STD)
    normalised = ((rgb - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(plots.denormalise(normalised), rgb, atol=1e-12)


def test_denormalise_takes_the_datasets_mean_and_std():
    rng = np.random.default_rng(1)
    rgb = rng.random((4, 6, 3))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalised = ((rgb - np.array(mean)) / np.array(std)).transpose(2, 0, 1)
    np.testing.assert_allclose(plots.denormalise(normalised, mean, std), rgb, atol=1e-12)
    assert not np.allclose(plots.denormalise(normalised), rgb, atol=1e-3)  # OpenAI's would be wrong here
    with pytest.raises(ValueError, match="3 channels and std > 0"):
        plots.denormalise(normalised, mean, (0.2, 0.0, 0.3))


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
