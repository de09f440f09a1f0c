"""Feature topology of adapted patch and state text embeddings (DAPO Fig. 1, Fig. 9, appendix 11.3).

The paper argues from t-SNE pictures that DAPO's prompts pull defect patches into fine-grained
clusters around their own text embeddings, while AnomalyCLIP's patches scatter and its text
anchors crowd together. This module gathers what is needed to *measure* that claim as well as
draw it:

* :func:`patch_labels`: each patch of the model's grid labelled by the majority of the
  per-type mask pixels it covers (``MIXED`` when no state holds more than ``min_fraction``);
* :func:`sample_patches`: a balanced sample of labelled patches of a dataset (the same
  ``per_class`` patches of every state, drawn with a fixed seed, independent of any model, so
  every method is measured on the same patches);
* :func:`embed`: the adapted, normalised patch embeddings of :meth:`dapo.methods.dapo.model.DAPO.encode_image`
  at the sampled positions and the K+1 state text embeddings of :meth:`~dapo.methods.dapo.model.DAPO.encode_text`,
  in one space (:func:`stage_space`);
* the measures, computed in that space (never on a 2-D projection): :func:`silhouette`,
  :func:`knn_purity`, :func:`alignment`, :func:`normal_auroc`, :func:`text_cosines`, gathered
  by :func:`topology_measures`;
* the vocabulary playground: :func:`parse_words`, :func:`vocabulary_maps`, :func:`playground_widget`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dapo.clip.vocabulary import check_vocabulary

NORMAL = 0
MIXED = -1  # a patch no state covers by more than ``min_fraction``: left out of every sample


# ----------------------------------------------------------------------------- patches and labels


def patch_labels(type_mask, grid: tuple[int, int], min_fraction: float = 0.5) -> np.ndarray:
    """State of every patch of a ``grid = (h, w)`` over an ``(H, W)`` per-type mask: ``(h * w,)`` int64.

    Patch ``(i, j)`` covers rows ``i*ph .. (i+1)*ph - 1`` and columns ``j*pw .. (j+1)*pw - 1`` with
    ``ph = H // h``, ``pw = W // w`` (the ViT's patchify; remainder pixels are dropped as its
    convolution drops them). Its label is the state with the most pixels in it when that state
    covers *more* than ``min_fraction`` of the patch (a strict majority for the default 0.5),
    else :data:`MIXED`. Row-major order, as the patch tokens.
    """
    mask = np.asarray(type_mask)
    h, w = (int(v) for v in grid)
    if mask.ndim != 2:
        raise ValueError(f"type_mask must be (H, W), got shape {mask.shape}")
    if h < 1 or w < 1 or mask.shape[0] < h or mask.shape[1] < w:
        raise ValueError(f"grid {grid} does not fit a {mask.shape[0]}x{mask.shape[1]} type mask")
    if not 0.5 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction={min_fraction}: must be in [0.5, 1) so that the majority is unique")
    if not np.issubdtype(mask.dtype, np.integer) or (mask.size and mask.min() < 0):
        raise ValueError("type_mask must hold non-negative integer state ids (0 = normal)")
    ph, pw = mask.shape[0] // h, mask.shape[1] // w
    blocks = mask[: h * ph, : w * pw].reshape(h, ph, w, pw).transpose(0, 2, 1, 3).reshape(h * w, ph * pw)
    n_states = int(blocks.max()) + 1
    offsets = blocks.astype(np.int64) + n_states * np.arange(h * w, dtype=np.int64)[:, None]
    counts = np.bincount(offsets.ravel(), minlength=h * w * n_states).reshape(h * w, n_states)
    best = counts.argmax(axis=1)
    share = counts.max(axis=1) / (ph * pw)
    return np.where(share > min_fraction, best, MIXED).astype(np.int64)


@dataclass(frozen=True)
class PatchSample:
    """Sampled patches: source image index, patch index (row-major), state label, product."""

    image: np.ndarray
    patch: np.ndarray
    label: np.ndarray
    product: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def counts(self) -> dict[int, int]:
        """Patches per state label."""
        values, counts = np.unique(self.label, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


def balanced_sample(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, patch, label)`` index arrays of at most ``per_class`` patches of every state.

    ``labels``: ``(n_images, n_patches)`` from :func:`patch_labels`; :data:`MIXED` patches are
    never drawn. Each state's patches are drawn without replacement by one
    ``numpy.random.default_rng(seed)`` (states in increasing order); a state with fewer patches
    gives all of them. Rows are ordered by state, then image, then patch.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (n_images, n_patches), got shape {labels.shape}")
    if int(per_class) < 1:
        raise ValueError(f"per_class={per_class}: must be >= 1")
    rng = np.random.default_rng(seed)
    flat = labels.ravel()
    chosen = []
    for state in np.unique(flat[flat >= 0]):
        where = np.flatnonzero(flat == state)
        take = where if len(where) <= per_class else rng.choice(where, size=per_class, replace=False)
        chosen.append(np.sort(take))
    index = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    image, patch = np.divmod(index, labels.shape[1])
    return image.astype(np.int64), patch.astype(np.int64), flat[index].astype(np.int64)


def sample_patches(dataset, grid: tuple[int, int], per_class: int, seed: int = 0,
                   min_fraction: float = 0.5) -> PatchSample:
    """A balanced, seeded sample of labelled patches of ``dataset`` (its ``type_mask`` ids are the labels:
    open it with ``vocab_scope="dataset"`` so that they index ``dataset.dataset_vocabulary``)."""
    labels, products = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        labels.append(patch_labels(sample["type_mask"], grid, min_fraction))
        products.append(sample["product"])
    if not labels:
        raise ValueError("the dataset has no images to sample patches from")
    image, patch, label = balanced_sample(np.stack(labels), per_class, seed)
    return PatchSample(image, patch, label, np.asarray(products, dtype=object)[image])


# ----------------------------------------------------------------------------- embeddings


def stage_space(patches: Sequence[torch.Tensor], stage: int | str = "all") -> torch.Tensor:
    """Patch embeddings of the chosen stage(s): ``(B, N, C)`` for one stage index, or, for ``"all"``,
    the M normalised stage embeddings concatenated and scaled by 1/sqrt(M) (unit norm, ``(B, N, M*C)``).

    In the ``"all"`` space the cosine of a patch to a text embedding placed there by
    :func:`text_space` is the mean over the stages of the per-stage cosines: the quantity the
    multi-type map averages (Eq. 8, mean over the M stage maps).
    """
    if stage == "all":
        return torch.cat(list(patches), dim=-1) / math.sqrt(len(patches))
    if isinstance(stage, int) and not isinstance(stage, bool) and -len(patches) <= stage < len(patches):
        return patches[stage]
    raise ValueError(f"stage={stage!r}: use 'all' or a stage index in [-{len(patches)}, {len(patches) - 1}]")


def text_space(text: torch.Tensor, n_stages: int, stage: int | str = "all") -> torch.Tensor:
    """State text embeddings ``(..., S, C)`` placed in the space of :func:`stage_space`."""
    if stage == "all":
        return torch.cat([text] * n_stages, dim=-1) / math.sqrt(n_stages)
    return text


@dataclass
class Embedded:
    """One model's embeddings of a :class:`PatchSample`, all unit vectors of the same space.

    patches: ``(N, D)``. patch_text: the state text embeddings each patch is scored against,
    ``(S, D)``, or ``(N, S, D)`` when handcrafted prompts name each patch's product.
    anchors: ``(S, D)`` state text embeddings for the pictures (product-agnostic).
    states: the S state names (normal first; ``("normal", "anomaly")`` for binary models).
    """

    patches: np.ndarray
    patch_text: np.ndarray
    anchors: np.ndarray
    states: tuple[str, ...]


@torch.no_grad()
def _text(model, vocabulary: Sequence[str], product: str | None, n_stages: int, stage) -> torch.Tensor:
    from dapo.util.precision import autocast

    with autocast(model.device, "auto" if model.device.type == "cuda" else "fp32"):
        text = model.encode_text(vocabulary, product).float()
    return text_space(text, n_stages, stage)


@torch.no_grad()
def embed(models: Mapping, dataset, sample: PatchSample, vocabulary: Sequence[str], *, stage: int | str = "all",
          product_text: bool = False, batch_size: int = 16) -> dict:
    """``{key: Embedded}`` for every model of ``models`` (same backbone input size), one pass over the
    sampled images. ``vocabulary``: the names of the labels (label k = ``vocabulary[k - 1]``).

    Text: ``model.encode_text(vocabulary)``, product-agnostic (handcrafted prompts say "object"),
    the same anchors for the measures and the pictures. ``product_text``: score each patch of a
    handcrafted-prompt model (MultiADS, CLIP-AC) against its own product's prompts instead, as
    their evaluation does (one text encoding per product: thousands of prompts each).
    """
    from dapo.util.precision import autocast

    vocabulary = check_vocabulary(vocabulary)
    images = np.unique(sample.image)
    rows = {int(i): np.flatnonzero(sample.image == i) for i in images}
    chunks: dict = {key: [] for key in models}
    order = []
    for start in range(0, len(images), batch_size):
        part = images[start:start + batch_size]
        batch = torch.stack([dataset[int(i)]["image"] for i in part])
        local = np.concatenate([np.full(len(rows[int(i)]), j) for j, i in enumerate(part)])
        taken = np.concatenate([rows[int(i)] for i in part])
        order.append(taken)
        for key, model in models.items():
            model.eval()
            with autocast(model.device, "auto" if model.device.type == "cuda" else "fp32"):
                _, patches, _ = model.encode_image(batch.to(model.device))
            space = stage_space([p.float() for p in patches], stage)
            chunks[key].append(space[torch.as_tensor(local), torch.as_tensor(sample.patch[taken])].cpu().numpy())
    position = np.argsort(np.concatenate(order)) if order else np.zeros(0, dtype=np.int64)
    out = {}
    for key, model in models.items():
        n_stages = len(model.adapters)
        if product_text and model.uses_product_names:
            per_product = {p: _text(model, vocabulary, p, n_stages, stage).cpu().numpy()
                           for p in dict.fromkeys(sample.product)}
            patch_text = np.stack([per_product[p] for p in sample.product]) if len(sample) else np.zeros((0,))
        else:
            patch_text = _text(model, vocabulary, None, n_stages, stage).cpu().numpy()
        anchors = _text(model, vocabulary, None, n_stages, stage).cpu().numpy()
        patches = np.concatenate(chunks[key])[position] if chunks[key] else np.zeros((0, anchors.shape[-1]))
        out[key] = Embedded(patches.astype(np.float64), patch_text.astype(np.float64), anchors.astype(np.float64),
                            model.state_names(vocabulary))
    return out


# ----------------------------------------------------------------------------- measures


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("embeddings must be non-zero vectors (cosine geometry)")
    return x / norms


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of the patches grouped by state, cosine distance
    (``sklearn.metrics.silhouette_score(x, labels, metric="cosine")``); in [-1, 1], 1 = tight,
    well-apart groups. Needs 2 <= number of states <= number of patches - 1."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    n_groups = len(np.unique(labels))
    if not 2 <= n_groups <= len(labels) - 1:
        raise ValueError(f"silhouette needs 2 to n-1 groups; got {n_groups} group(s) of {len(labels)} patches")
    return float(silhouette_score(np.asarray(x, dtype=np.float64), labels, metric="cosine"))


def knn_labels(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indices ``(N, k)`` of every row's k most cosine-similar other rows (itself excluded), most similar first."""
    x = _unit(x)
    if not 1 <= k <= len(x) - 1:
        raise ValueError(f"k={k}: must be in [1, {len(x) - 1}] for {len(x)} patches")
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), chunk):
        sims = x[start:start + chunk] @ x.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ranked = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        out[start:start + chunk] = np.take_along_axis(top, ranked, axis=1)
    return out


def knn_purity(x: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """k-nearest-neighbour label purity: the mean over patches of the share of its k nearest
    other patches (cosine) that carry its own state. Chance level on a balanced sample of S
    states is about 1/S; 1 = every neighbourhood pure."""
    labels = np.asarray(labels)
    neighbours = knn_labels(x, k)
    return float((labels[neighbours] == labels[:, None]).mean())


def _patch_text(text: np.ndarray, n: int) -> np.ndarray:
    text = _unit(text)
    if text.ndim == 2:
        return np.broadcast_to(text, (n, *text.shape))
    if text.ndim != 3 or len(text) != n:
        raise ValueError(f"text must be (S, D) or ({n}, S, D), got shape {text.shape}")
    return text


def _cosines(x: np.ndarray, text: np.ndarray) -> np.ndarray:
    """(N, S) cosines of every patch to every state text embedding (shared or per patch)."""
    x = _unit(x)
    return np.einsum("nd,nsd->ns", x, _patch_text(text, len(x)))


def alignment(x: np.ndarray, labels: np.ndarray, text: np.ndarray) -> dict[int, float]:
    """Per defect state k present in ``labels``: mean over its patches of
    ``cos(patch, t_k) - mean_{j >= 1, j != k} cos(patch, t_j)`` (own text embedding minus the other
    defect types'). Positive: the type's patches sit nearer their own name. ``text``: (S, D) or
    (N, S, D), state 0 normal; needs S >= 3 (two defect anchors) and an anchor for every label."""
    labels = np.asarray(labels)
    n_states = np.asarray(text).shape[-2]
    if n_states < 3:
        raise ValueError(f"alignment needs at least two defect text embeddings; the text has {n_states} states "
                         f"(a binary model has one abnormal state)")
    if labels.max(initial=0) >= n_states:
        raise ValueError(f"label {int(labels.max())} has no text embedding (the text has {n_states} states)")
    cos = _cosines(x, text)
    out = {}
    for state in np.unique(labels[labels > 0]):
        rows = cos[labels == state]
        others = np.delete(rows[:, 1:], state - 1, axis=1).mean(axis=1)
        out[int(state)] = float((rows[:, state] - others).mean())
    return out


def normal_auroc(x: np.ndarray, labels: np.ndarray, text: np.ndarray) -> float:
    """Normal-vs-defect separation: AUROC of ``-cos(patch, t_normal)`` with defect patches
    (label > 0) as positives (``sklearn.metrics.roc_auc_score``); 1 = every defect patch is
    further from the normal text embedding than every normal patch, 0.5 = chance."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    positive = labels > 0
    if positive.all() or not positive.any():
        raise ValueError("normal_auroc needs both normal (0) and defect (> 0) patches")
    return float(roc_auc_score(positive, -_cosines(x, text)[:, 0]))


def text_cosines(text: np.ndarray) -> tuple[float, float]:
    """``(mean cos(t_normal, t_k) over defect states, mean pairwise cos(t_j, t_k) between defect states)``
    of (S, D) state text embeddings; the second is NaN with a single defect state. High values:
    text anchors in close proximity (the paper's reading of AnomalyCLIP in Fig. 9b)."""
    text = _unit(text)
    if text.ndim != 2 or len(text) < 2:
        raise ValueError(f"text must be (S, D) with S >= 2 states, got shape {text.shape}")
    cos = text @ text.T
    to_normal = float(cos[0, 1:].mean())
    defects = cos[1:, 1:][np.triu_indices(len(text) - 1, k=1)]
    return to_normal, float(defects.mean()) if defects.size else float("nan")


MEASURES = ("silhouette", "knn_purity", "alignment", "alignment_seen", "alignment_unseen", "normal_auroc",
            "text_cos_normal", "text_cos_defects")


def topology_measures(x: np.ndarray, labels: np.ndarray, text: np.ndarray, anchors: np.ndarray | None = None, *,
                      seen: Mapping[int, bool] | None = None, k: int = 10) -> dict[str, float]:
    """Every measure of :data:`MEASURES` for one model's embeddings (NaN where undefined).

    ``text``: the state embeddings the patches are scored against ((S, D) or (N, S, D));
    ``anchors``: product-agnostic (S, D) ones for the text measures (default ``text`` when 2-D).
    ``seen``: defect label -> seen in training; ``alignment_seen``/``_unseen`` average the
    per-type alignment over those types (``alignment`` over all). Alignment is NaN for binary
    models (one abnormal state: no per-type text embedding).
    """
    labels = np.asarray(labels)
    text = np.asarray(text)
    anchors = text if anchors is None else np.asarray(anchors)
    if anchors.ndim != 2:
        raise ValueError("pass anchors (S, D) when text is per patch (N, S, D)")
    per_type = alignment(x, labels, text) if text.shape[-2] >= 3 else {}
    seen = dict(seen or {})

    def mean_of(states) -> float:
        values = [per_type[s] for s in states if s in per_type]
        return float(np.mean(values)) if values else float("nan")

    to_normal, between = text_cosines(anchors)
    return {
        "silhouette": silhouette(x, labels),
        "knn_purity": knn_purity(x, labels, k),
        "alignment": mean_of(per_type),
        "alignment_seen": mean_of([s for s in per_type if seen.get(s, True)]),
        "alignment_unseen": mean_of([s for s in per_type if not seen.get(s, True)]),
        "normal_auroc": normal_auroc(x, labels, text),
        "text_cos_normal": to_normal,
        "text_cos_defects": between,
    }


def state_label_names(vocabulary: Sequence[str], seen: Mapping[str, bool] | None = None) -> list[str]:
    """Display names of the labels 0..K: ``normal``, then the vocabulary with ``*`` on unseen types."""
    seen = dict(seen or {})
    return ["normal", *(name if seen.get(name, True) else f"{name}*" for name in vocabulary)]


# ----------------------------------------------------------------------------- playground


def parse_words(words: str | Sequence[str]) -> tuple[str, ...]:
    """Defect names typed as ``"scratch, dent, smudge"`` (commas or semicolons) or given as a sequence,
    validated by :func:`dapo.clip.vocabulary.check_vocabulary` (empty names and duplicates are refused)."""
    if isinstance(words, str):
        parts = [part.strip() for part in words.replace(";", ",").split(",")]
        if not any(parts):
            raise ValueError(f"no defect names in {words!r}: type them separated by commas, e.g. 'scratch, dent'")
        return check_vocabulary(parts, source="defect words")
    return check_vocabulary(words, source="defect words")


@torch.no_grad()
def vocabulary_maps(model, image: torch.Tensor, words: str | Sequence[str], product: str | None = None):
    """Score one image ``(3, H, W)`` against any defect names without retraining.

    Returns ``(class_names, type_probs (K+1, H, W), type_mask (H, W))`` as numpy arrays: the
    per-state maps of :class:`dapo.engine.inference.Predictor` and their argmax (0 = normal).
    """
    from dapo.engine.inference import Predictor

    vocabulary = parse_words(words)
    predictor = Predictor(model, vocabulary, product=product)
    pred = predictor(image.unsqueeze(0))
    return predictor.class_names, pred.type_probs[0].float().cpu().numpy(), pred.type_mask[0].cpu().numpy()


def playground_widget(show: Callable[[int, str], None], n_images: int, words: str, index: int = 0):
    """An ipywidgets control (image index slider starting at ``index`` + defect-words text box) that
    calls ``show(index, words)`` into its output area whenever one of them changes, or ``None`` when
    ipywidgets is not installed. Nothing is drawn when it is built: the notebook shows the first
    image as a static figure, so a headless run (papermill, nbval) sends no widget output at all."""
    try:
        import ipywidgets
    except ImportError:
        return None
    slider = ipywidgets.IntSlider(value=index, min=0, max=max(n_images - 1, 0), description="image")
    text = ipywidgets.Text(value=words, description="defects", continuous_update=False)
    output = ipywidgets.Output()

    def redraw(_change=None) -> None:
        with output:
            output.clear_output(wait=True)
            show(slider.value, text.value)

    slider.observe(redraw, names="value")
    text.observe(redraw, names="value")
    return ipywidgets.VBox([slider, text, output])


def measures_frame(embedded: Mapping, sample: PatchSample, vocabulary: Sequence[str], seen: Mapping[str, bool],
                   dataset: str, k: int = 10):
    """Tidy measures (``dataset, method, seed, metric, value``) of ``{(method, seed): Embedded}``;
    ``seen``: defect name -> seen in training (:func:`dapo.data.knowledge.seen_unseen`)."""
    import pandas as pd

    seen_by_label = {i + 1: bool(seen.get(name, True)) for i, name in enumerate(vocabulary)}
    rows = []
    for (method, seed), emb in embedded.items():
        values = topology_measures(emb.patches, sample.label, emb.patch_text, emb.anchors, seen=seen_by_label, k=k)
        rows += [{"dataset": dataset, "method": method, "seed": seed, "metric": metric, "value": value}
                 for metric, value in values.items()]
    return pd.DataFrame(rows)
