"""Feature topology: patch labels by majority, balanced sampling, the measures against sklearn and
hand-worked values, embeddings in the model's own geometry, the vocabulary playground."""

import sys

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from dapo.experiments import topology  # noqa: E402
from dapo.experiments.topology import MIXED  # noqa: E402


def unit(angles_deg):
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


# ----------------------------------------------------------------------------- patch labels


def test_patch_labels_take_the_strict_majority_of_each_patch():
    mask = np.zeros((8, 8), dtype=np.int64)      # grid 2 x 2: patches of 4 x 4 = 16 pixels
    mask[0:3, 4:7] = 2                           # patch 1: 9 of 16 pixels "2" -> 2
    mask[4:6, 0:4] = 1                           # patch 2: 8 of 16 "1", 8 normal -> tie -> mixed
    mask[4:8, 4:8] = 1                           # patch 3: 6 "1", 5 "2", 5 normal -> no majority
    mask[4:5, 4:8] = 2
    mask[5:6, 4:5] = 2
    mask[5:6, 5:6] = 1
    mask[6:8, 6:8] = 0
    mask[7, 5] = 0
    counts3 = np.bincount(mask[4:8, 4:8].ravel(), minlength=3)
    assert counts3.tolist() == [5, 6, 5]
    np.testing.assert_array_equal(topology.patch_labels(mask, (2, 2)), [0, 2, MIXED, MIXED])
    # a lower bar: 9/16 = 0.56 fails 0.6, the normal patch (16/16) passes
    np.testing.assert_array_equal(topology.patch_labels(mask, (2, 2), min_fraction=0.6), [0, MIXED, MIXED, MIXED])


def test_patch_labels_are_row_major_and_drop_the_remainder_like_patchify():
    mask = np.zeros((5, 7), dtype=np.int64)      # grid 2 x 3: patches of 2 x 2, last row/column dropped
    mask[0:2, 4:6] = 3                           # row 0, column 2 -> patch index 2
    mask[4, :] = 1                               # the dropped row
    mask[:, 6] = 1                               # the dropped column
    np.testing.assert_array_equal(topology.patch_labels(mask, (2, 3)), [0, 0, 3, 0, 0, 0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(grid=(2, 2), min_fraction=0.4), "min_fraction=0.4: must be in \\[0.5, 1\\)"),
    (dict(grid=(9, 2)), "grid \\(9, 2\\) does not fit a 8x8"),
])
def test_patch_labels_refuse_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        topology.patch_labels(np.zeros((8, 8), dtype=np.int64), **kwargs)


def test_patch_labels_refuse_negative_or_float_masks():
    with pytest.raises(ValueError, match="non-negative integer state ids"):
        topology.patch_labels(-np.ones((4, 4), dtype=np.int64), (2, 2))
    with pytest.raises(ValueError, match="non-negative integer state ids"):
        topology.patch_labels(np.zeros((4, 4)), (2, 2))


# ----------------------------------------------------------------------------- sampling


def test_balanced_sample_draws_per_class_without_replacement_and_never_mixed():
    rng = np.random.default_rng(3)
    labels = rng.choice([MIXED, 0, 0, 0, 1, 2], size=(20, 16))
    labels[0, :3] = 3                             # a rare state: only 3 patches
    image, patch, label = topology.balanced_sample(labels, per_class=10, seed=0)
    np.testing.assert_array_equal(labels[image, patch], label)
    assert {s: int((label == s).sum()) for s in np.unique(label)} == {0: 10, 1: 10, 2: 10, 3: 3}
    assert len(set(zip(image.tolist(), patch.tolist()))) == len(label)       # no patch twice
    assert list(label) == sorted(label)
    again = topology.balanced_sample(labels, per_class=10, seed=0)
    other = topology.balanced_sample(labels, per_class=10, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (image, patch, label)))
    assert not np.array_equal(other[0] * 16 + other[1], image * 16 + patch)
    with pytest.raises(ValueError, match="per_class=0"):
        topology.balanced_sample(labels, per_class=0, seed=0)


def test_sample_patches_labels_the_datasets_masks(make_tiny_dataset):
    dataset = make_tiny_dataset(n=9, seed=2)
    sample = topology.sample_patches(dataset, (4, 4), per_class=5, seed=0)
    for i, p, lab in zip(sample.image, sample.patch, sample.label):
        assert topology.patch_labels(dataset[int(i)]["type_mask"].numpy(), (4, 4))[p] == lab
    assert set(sample.counts()) <= {0, 1, 2} and sample.counts()[0] == 5
    assert set(sample.product) == {"widget"}


# ----------------------------------------------------------------------------- measures


def test_silhouette_matches_a_hand_worked_cosine_example_and_sklearn():
    x = unit([0, 10, 90, 100])
    labels = np.array([0, 0, 1, 1])
    d = 1.0 - x @ x.T
    expected = []
    for i in range(4):
        own = [j for j in range(4) if labels[j] == labels[i] and j != i]
        other = [j for j in range(4) if labels[j] != labels[i]]
        a, b = d[i, own].mean(), d[i, other].mean()
        expected.append((b - a) / max(a, b))
    assert topology.silhouette(x, labels) == pytest.approx(np.mean(expected), abs=1e-12)
    # tight, orthogonal clusters: close to 1; interleaved labels: negative
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    tight = np.concatenate([c + 0.01 * rng.normal(size=(20, 3)) for c in centres])
    tight_labels = np.repeat([0, 1, 2], 20)
    assert topology.silhouette(tight, tight_labels) > 0.98
    assert topology.silhouette(tight, np.tile([0, 1, 2], 20)) < 0
    with pytest.raises(ValueError, match="silhouette needs 2 to n-1 groups; got 1 group"):
        topology.silhouette(tight, np.zeros(60, dtype=int))


def test_knn_purity_matches_sklearn_neighbours_and_known_answers():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    x = np.concatenate([c + 0.6 * rng.normal(size=(30, 4)) for c in np.eye(4)[:3]])
    labels = np.repeat([0, 1, 2], 30)
    k = 7
    neighbours = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x, return_distance=False)
    reference = (labels[neighbours[:, 1:]] == labels[:, None]).mean()   # column 0: the point itself
    assert topology.knn_purity(x, labels, k) == pytest.approx(reference, abs=1e-12)
    assert 0.4 < reference < 1.0                                         # neither trivial nor chance
    # separated clusters: every neighbourhood pure; hand-worked line of angles
    assert topology.knn_purity(np.concatenate([np.tile(c, (5, 1)) + 1e-3 * rng.normal(size=(5, 4))
                                               for c in np.eye(4)]), np.repeat(range(4), 5), k=4) == 1.0
    line = unit([0, 10, 25, 45])                 # labels 0, 0, 1, 1
    # k=1: 0->10 (same), 10->0 (same), 25->10 (other), 45->25 (same)
    assert topology.knn_purity(line, np.array([0, 0, 1, 1]), k=1) == pytest.approx(0.75)
    # k=2: 0->{10,25}, 10->{0,25}, 25->{10,45}, 45->{25,10}: one of two the same each time
    assert topology.knn_purity(line, np.array([0, 0, 1, 1]), k=2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k=4: must be in \\[1, 3\\]"):
        topology.knn_purity(line, np.array([0, 0, 1, 1]), k=4)


def test_knn_labels_work_in_chunks():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(37, 5))
    np.testing.assert_array_equal(topology.knn_labels(x, 3, chunk=5), topology.knn_labels(x, 3, chunk=1000))


def test_alignment_own_text_minus_the_other_types():
    text = np.eye(4)                              # normal, and three defect types, orthonormal
    x = np.array([[0.0, 1.0, 0.0, 0.0],           # type 1 on its own anchor: 1 - mean(0, 0) = 1
                  [0.0, 0.6, 0.8, 0.0],           # type 1 between 1 and 2: 0.6 - mean(0.8, 0) = 0.2
                  [0.0, 0.0, 0.0, 1.0],           # type 3 on its own anchor: 1
                  [1.0, 0.0, 0.0, 0.0]])          # normal: not a defect type
    labels = np.array([1, 1, 3, 0])
    assert topology.alignment(x, labels, text) == pytest.approx({1: 0.6, 3: 1.0})
    per_patch = np.broadcast_to(text, (4, 4, 4)).copy()
    assert topology.alignment(x, labels, per_patch) == pytest.approx({1: 0.6, 3: 1.0})
    per_patch[1] = np.eye(4)[[0, 2, 1, 3]]        # patch 1's product names its anchors the other way round
    assert topology.alignment(x, labels, per_patch)[1] == pytest.approx((1.0 + 0.8 - 0.3) / 2)
    with pytest.raises(ValueError, match="at least two defect text embeddings; the text has 2 states"):
        topology.alignment(x, labels, np.eye(4)[:2])
    with pytest.raises(ValueError, match="label 3 has no text embedding"):
        topology.alignment(x, labels, np.eye(4)[:3])


def test_normal_auroc_against_sklearn_and_a_pair_count():
    from sklearn.metrics import roc_auc_score

    text = unit([0, 90])
    x = unit([5, 50, 20, 80, 30, 10])
    labels = np.array([0, 1, 0, 1, 2, 0])
    # defect patches (50, 80, 30 deg) vs normal (5, 20, 10 deg): further from 0 deg in 9 of 9 pairs
    assert topology.normal_auroc(x, labels, text) == pytest.approx(1.0)
    labels = np.array([0, 1, 2, 0, 1, 0])        # defects at 50, 20, 30; normal at 5, 80, 10
    pairs = [(d > n) + 0.5 * (d == n) for d in (50, 20, 30) for n in (5, 80, 10)]
    assert topology.normal_auroc(x, labels, text) == pytest.approx(np.mean(pairs))
    assert np.mean(pairs) == pytest.approx(roc_auc_score(labels > 0, -np.cos(np.deg2rad([5, 50, 20, 80, 30, 10]))))
    with pytest.raises(ValueError, match="both normal"):
        topology.normal_auroc(x, np.ones(6, dtype=int), text)


def test_text_cosines_hand_worked():
    text = unit([0, 60, 90])
    to_normal, between = topology.text_cosines(text)
    assert to_normal == pytest.approx((0.5 + 0.0) / 2)
    assert between == pytest.approx(np.cos(np.deg2rad(30)))
    to_normal, between = topology.text_cosines(unit([0, 60]))
    assert to_normal == pytest.approx(0.5) and np.isnan(between)


def test_topology_measures_split_seen_and_unseen_and_mark_binary_alignment_undefined():
    rng = np.random.default_rng(5)
    text = np.eye(4)
    labels = np.repeat([0, 1, 2, 3], 12)
    x = text[labels] + 0.2 * rng.normal(size=(48, 4))
    values = topology.topology_measures(x, labels, text, seen={1: True, 2: True, 3: False}, k=5)
    assert set(values) == set(topology.MEASURES)
    per_type = topology.alignment(x, labels, text)
    assert values["alignment"] == pytest.approx(np.mean(list(per_type.values())))
    assert values["alignment_seen"] == pytest.approx((per_type[1] + per_type[2]) / 2)
    assert values["alignment_unseen"] == pytest.approx(per_type[3])
    assert values["silhouette"] > 0.3 and values["knn_purity"] > 0.8 and values["normal_auroc"] > 0.9
    binary = topology.topology_measures(x, labels, text[:2], k=5)
    assert np.isnan(binary["alignment"]) and np.isnan(binary["text_cos_defects"])
    assert binary["normal_auroc"] == pytest.approx(values["normal_auroc"])
    with pytest.raises(ValueError, match="pass anchors"):
        topology.topology_measures(x, labels, np.broadcast_to(text, (48, 4, 4)))


def test_state_label_names_mark_unseen_types():
    assert topology.state_label_names(("bent", "rust"), {"bent": True, "rust": False}) == ["normal", "bent", "rust*"]


# ----------------------------------------------------------------------------- embeddings


def test_stage_space_all_gives_the_mean_of_the_stage_cosines():
    rng = torch.Generator().manual_seed(0)
    stages = [torch.nn.functional.normalize(torch.randn(2, 5, 8, generator=rng), dim=-1) for _ in range(3)]
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=rng), dim=-1)
    space = topology.stage_space(stages, "all")
    torch.testing.assert_close(space.norm(dim=-1), torch.ones(2, 5))
    mean_cos = torch.stack([s @ text.T for s in stages]).mean(0)
    torch.testing.assert_close(space @ topology.text_space(text, 3, "all").T, mean_cos)
    assert topology.stage_space(stages, -1) is stages[-1]
    with pytest.raises(ValueError, match="stage=3: use 'all' or a stage index"):
        topology.stage_space(stages, 3)


@pytest.mark.parametrize("method, product_text", [("dapo", False), ("multiads", False), ("multiads", True)])
def test_embed_takes_the_sampled_patches_in_the_models_map_geometry(method, product_text, tiny_backbone,
                                                                    make_tiny_dataset, test_prompts):
    from dapo.methods import make_model

    overrides = dict(templates=test_prompts["templates"], normal_states=test_prompts["normal_states"],
                     defect_states=test_prompts["defect_states"]) if method == "multiads" else {}
    model = make_model(method, tiny_backbone, **overrides).eval()
    dataset = make_tiny_dataset(n=6, seed=1)
    sample = topology.sample_patches(dataset, tiny_backbone.grid_size(), per_class=4, seed=0)
    vocabulary = dataset.dataset_vocabulary
    emb = topology.embed({"m": model}, dataset, sample, vocabulary, product_text=product_text, batch_size=4)["m"]
    assert emb.states == ("normal", *vocabulary)
    assert emb.patches.shape == (len(sample), 4 * tiny_backbone.embed_dim)
    expected_text = (len(sample), 3, emb.patches.shape[1]) if product_text else (3, emb.patches.shape[1])
    assert emb.patch_text.shape == expected_text
    np.testing.assert_allclose(emb.anchors, topology.text_space(model.encode_text(vocabulary), 4).detach().numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb.patches, axis=1), 1.0, atol=1e-5)
    # cosine in this space = mean over the stages of the map logits x tau, for that image and patch
    images = torch.stack([dataset[int(i)]["image"] for i in sample.image])
    with torch.no_grad():
        out = model(images, vocabulary, products=list(sample.product) if product_text else None)
    h, w = tiny_backbone.grid_size()
    logits = torch.stack(out.stage_logits).mean(0).flatten(2)            # (N, S, h*w)
    maps = logits[torch.arange(len(sample)), :, torch.as_tensor(sample.patch)].numpy() * model.temperature
    text = emb.patch_text if emb.patch_text.ndim == 3 else np.broadcast_to(emb.patch_text, (len(sample), 3,
                                                                                           emb.patches.shape[1]))
    np.testing.assert_allclose(np.einsum("nd,nsd->ns", emb.patches, text), maps, atol=1e-4)


def test_embed_refuses_a_plain_string_vocabulary(tiny_backbone, make_tiny_dataset):
    from dapo.methods import make_model

    dataset = make_tiny_dataset(n=3)
    sample = topology.sample_patches(dataset, tiny_backbone.grid_size(), per_class=2, seed=0)
    with pytest.raises(TypeError, match="not the string 'hole'"):
        topology.embed({"m": make_model("dapo", tiny_backbone)}, dataset, sample, "hole")


def test_measures_frame_is_tidy_per_method_and_seed(tiny_backbone, make_tiny_dataset):
    from dapo.methods import make_model

    dataset = make_tiny_dataset(n=9, seed=3)
    sample = topology.sample_patches(dataset, tiny_backbone.grid_size(), per_class=6, seed=0)
    models = {("DAPO", 0): make_model("dapo", tiny_backbone), ("AnomalyCLIP", 0): make_model("anomalyclip",
                                                                                               tiny_backbone)}
    embedded = topology.embed(models, dataset, sample, dataset.dataset_vocabulary)
    frame = topology.measures_frame(embedded, sample, dataset.dataset_vocabulary, {"hole": True, "scratch": False},
                                    "tiny", k=3)
    assert list(frame.columns) == ["dataset", "method", "seed", "metric", "value"]
    assert len(frame) == 2 * len(topology.MEASURES)
    values = frame.set_index(["method", "metric"])["value"]
    assert np.isnan(values["AnomalyCLIP", "alignment"]) and np.isfinite(values["DAPO", "alignment"])
    per_type = topology.alignment(embedded["DAPO", 0].patches, sample.label, embedded["DAPO", 0].patch_text)
    assert set(per_type) == {1, 2}                                     # both types sampled
    assert values["DAPO", "alignment_seen"] == pytest.approx(per_type[1])      # hole: seen
    assert values["DAPO", "alignment_unseen"] == pytest.approx(per_type[2])    # scratch: unseen
    assert np.isfinite(values["DAPO", "silhouette"])


# ----------------------------------------------------------------------------- playground


def test_parse_words_splits_commas_and_refuses_empty_or_repeated_names():
    assert topology.parse_words(" scratch, dent ,smudge; wobbly edge") == ("scratch", "dent", "smudge", "wobbly edge")
    assert topology.parse_words(["hole"]) == ("hole",)
    with pytest.raises(ValueError, match="no defect names in ' , '"):
        topology.parse_words(" , ")
    with pytest.raises(ValueError, match="entry 1 is ''"):
        topology.parse_words("scratch,,dent")
    with pytest.raises(ValueError, match="entry 1 \\('Scratch'\\) is the same defect"):
        topology.parse_words("scratch, Scratch")


def test_vocabulary_maps_score_any_names_without_training(tiny_backbone, images):
    from dapo.engine.inference import Predictor
    from dapo.methods import make_model

    model = make_model("dapo", tiny_backbone)
    names, probs, mask = topology.vocabulary_maps(model, images[0], "scratch, dent, smudge")
    assert names == ("normal", "scratch", "dent", "smudge")
    assert probs.shape == (4, *images.shape[-2:]) and mask.shape == images.shape[-2:]
    np.testing.assert_array_equal(mask, probs.argmax(0))
    reference = Predictor(model, ("scratch", "dent", "smudge"))(images[:1])
    np.testing.assert_allclose(probs, reference.type_probs[0].numpy(), atol=1e-6)


def test_playground_widget_is_none_without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)                # import raises ImportError
    assert topology.playground_widget(lambda index, words: None, 5, "scratch") is None


def test_playground_widget_draws_only_when_a_control_changes():
    pytest.importorskip("ipywidgets")
    calls = []
    widget = topology.playground_widget(lambda index, words: calls.append((index, words)), 5, "scratch, dent", index=3)
    slider, text, _ = widget.children
    assert (slider.value, slider.min, slider.max, text.value) == (3, 0, 4, "scratch, dent")
    assert calls == []                                              # built headless: nothing drawn
    slider.value = 1
    text.value = "dent"
    assert calls == [(1, "scratch, dent"), (1, "dent")]


# ----------------------------------------------------------------------------- figures


def test_topology_scatter_and_playground_figures_draw_every_panel():
    from dapo.experiments import plots
    rng = np.random.default_rng(6)
    panel = {"patches": rng.normal(size=(30, 8)), "labels": ["normal"] * 10 + ["bent"] * 10 + ["rust*"] * 10,
             "text": rng.normal(size=(3, 8)), "text_labels": ["normal", "bent", "rust*"]}
    fig = plots.topology_scatter({"A": panel, "B": panel}, method="tsne", seed=0)
    assert [ax.get_title() for ax in fig.axes] == ["A (TSNE)", "B (TSNE)"]
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["'bent'", "'normal'", "'rust*'"]
    markers = {c.get_label(): c.get_paths()[0].vertices.shape for c in fig.axes[0].collections[:3]}
    assert markers["rust*"] != markers["bent"]                          # unseen types: another marker
    image = rng.normal(size=(3, 16, 16))
    probs = rng.random((3, 16, 16))
    fig = plots.vocabulary_maps_figure(image, ("normal", "scratch", "dent"), probs, probs.argmax(0))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image", "p(scratch)", "p(dent)", "", "argmax mask"]           # "": the colour bar
