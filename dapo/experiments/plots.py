"""Figures of the notebooks: samples with per-type masks, qualitative predictions, loss curves,
and 2-D projections (t-SNE, UMAP) of prompt embeddings.

Functions take plain arrays and return a matplotlib Figure; saving (with the provenance
footer) is :func:`dapo.experiments.reporting.save_figure`'s job.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from dapo.data.images import normalisation


def denormalise(image, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Normalised ``[3, H, W]`` tensor or array -> ``[H, W, 3]`` floats in [0, 1].

    ``mean``/``std``: the normalisation the images were made with (the dataset's, i.e. the
    backbone's); default OpenAI CLIP's, as :func:`dapo.data.open_dataset`.
    """
    mean, std = normalisation(mean, std)
    arr = np.asarray(image, dtype=np.float64).transpose(1, 2, 0)
    return np.clip(arr * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


# ----------------------------------------------------------------------------- labels

#: Axis and panel labels of the tables' metric columns.
METRIC_LABELS = {
    "image_auroc": "image AUROC", "image_ap": "image AP", "image_f1_max": "image F1-max",
    "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "pixel_f1": "pixel F1",
    "pixel_aupro": "pixel AUPRO (exact)", "pixel_aupro_official": "pixel AUPRO (authors' recipe)",
    "multitype_auroc": "multi-type pixel AUROC", "multitype_ap": "multi-type pixel AP",
    "multitype_f1": "multi-type pixel F1", "delta_ap": "Δ mean AP",
    "loss_total": "total loss", "loss_global": "global loss", "loss_local": "local loss",
}


def metric_label(name: str) -> str:
    """A readable label for a metric column (the column name itself when unknown)."""
    return METRIC_LABELS.get(name, name.replace("_", " "))


# ----------------------------------------------------------------------------- colours

NORMAL_COLOUR = (0.6, 0.6, 0.6)
ANOMALY_COLOUR = (0.0, 0.0, 0.0)


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) -> CIELAB (D65), for colour distances (delta-E 1976 = Euclidean in Lab)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e(a, b) -> np.ndarray:
    """CIE76 colour difference of sRGB colours ``a`` and ``b`` (broadcast)."""
    return np.linalg.norm(srgb_to_lab(a) - srgb_to_lab(b), axis=-1)


@lru_cache(maxsize=1)
def qualitative_palette(n: int = 64) -> tuple[tuple[float, float, float], ...]:
    """``n`` vivid colours in farthest-point order in CIELAB (each the farthest from all before it and
    from the normal grey), drawn from a 16-level sRGB grid with lightness 30-85 and chroma > 30:
    the first k are as far apart as this greedy choice gets (deterministic, no randomness)."""
    levels = np.linspace(0.0, 1.0, 16)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = srgb_to_lab(grid)
    keep = (lab[:, 0] >= 30) & (lab[:, 0] <= 85) & (np.hypot(lab[:, 1], lab[:, 2]) > 30)
    grid, lab = grid[keep], lab[keep]
    nearest = np.linalg.norm(lab - srgb_to_lab(NORMAL_COLOUR), axis=1)
    chosen = []
    for _ in range(n):
        index = int(np.argmax(nearest))
        chosen.append(tuple(float(v) for v in grid[index]))
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[index], axis=1))
    return tuple(chosen)


@lru_cache(maxsize=1)
def _colour_order() -> tuple[str, ...]:
    """Defect names in palette order: the synthetic world's types first (they get the most distinct
    colours), then every other knowledge-base superclass alphabetically."""
    from dapo.data.knowledge import _defect_registry
    from dapo.synthetic.corpus import DEFECT_ORDER

    return (*DEFECT_ORDER, *sorted(set(_defect_registry()) - set(DEFECT_ORDER)))


def defect_colour(name: str) -> tuple[float, float, float]:
    """The one colour of a state in every figure: ``normal`` grey, ``anomaly`` (a binary model's
    state) black, each defect type (``*`` ignored) its own entry of :func:`qualitative_palette`; a
    name outside the knowledge base (the playground's free words) a stable later entry."""
    base = name.rstrip("*").strip()
    if base == "normal":
        return NORMAL_COLOUR
    if base == "anomaly":
        return ANOMALY_COLOUR
    order, palette = _colour_order(), qualitative_palette()
    if base in order:
        return palette[order.index(base) % len(palette)]
    spare = len(palette) - len(order)
    return palette[len(order) + zlib.crc32(base.encode()) % max(spare, 1)] if spare > 0 else palette[-1]


def type_colormap(class_names: Sequence[str] | int) -> ListedColormap:
    """Class 0 (normal) transparent, class k the colour of ``class_names[k]`` (:func:`defect_colour`),
    so a type has the same colour in every figure. An int (no names) falls back to palette order."""
    if isinstance(class_names, int):
        colours = [qualitative_palette()[i % len(qualitative_palette())] for i in range(max(class_names - 1, 1))]
    else:
        colours = [defect_colour(name) for name in list(class_names)[1:]] or [NORMAL_COLOUR]
    return ListedColormap([(0, 0, 0, 0)] + [(*c, 0.65) for c in colours])


def _overlay(ax, image, type_mask, class_names: Sequence[str], title: str = "", mean=None, std=None) -> None:
    ax.imshow(denormalise(image, mean, std))
    if type_mask is not None:
        ax.imshow(np.asarray(type_mask), cmap=type_colormap(class_names), vmin=0, vmax=len(class_names) - 1,
                  interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _legend(fig, class_names: Sequence[str]) -> None:
    handles = [Patch(color=defect_colour(name), label=name, alpha=0.8) for name in list(class_names)[1:]]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7,
                   bbox_to_anchor=(0.5, 0.02), frameon=False, title="defect type (mask colour)", title_fontsize=7)


def sample_grid(samples: Sequence[dict], class_names: Sequence[str], ncols: int = 6, *,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> plt.Figure:
    """Images with their ground-truth per-type masks overlaid; ``class_names[0]`` is normal.

    ``mean``/``std``: the samples' normalisation (see :func:`denormalise`).
    """
    nrows = int(np.ceil(len(samples) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.1 * nrows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, sample in zip(axes.ravel(), samples):
        defects = ", ".join(sample["defects"]) or "good"
        _overlay(ax, sample["image"], sample["type_mask"], class_names, f"{sample['product']}\n{defects}",
                 mean, std)
    _legend(fig, class_names)
    fig.subplots_adjust(bottom=0.12)
    return fig


def qualitative(images, true_masks, pred_masks, class_names: Sequence[str], titles: Sequence[str], *,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> plt.Figure:
    """Rows: image, ground-truth per-type mask, predicted per-type mask (argmax).

    ``mean``/``std``: the images' normalisation (see :func:`denormalise`).
    """
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(2.0 * n, 6.6), squeeze=False)
    for j in range(n):
        _overlay(axes[0, j], images[j], None, class_names, titles[j], mean, std)
        _overlay(axes[1, j], images[j], true_masks[j], class_names, "ground truth", mean, std)
        _overlay(axes[2, j], images[j], pred_masks[j], class_names, "prediction", mean, std)
    _legend(fig, class_names)
    fig.subplots_adjust(bottom=0.08)
    return fig


def epoch_position(history: pd.DataFrame) -> pd.Series:
    """Each step's position in epochs (``epoch - 1 + (k + 1) / steps of that epoch``): methods with
    different batch sizes share one x-axis."""
    order = history.groupby("epoch").cumcount() + 1
    per_epoch = history.groupby("epoch")["epoch"].transform("size")
    return history["epoch"] - 1 + order / per_epoch


def loss_curves(histories: dict[str, pd.DataFrame], columns: Sequence[str] = ("loss", "global", "local"),
                x: str = "epoch") -> plt.Figure:
    """One panel per loss column, one line per method; ``x="epoch"`` (default) places every step at its
    fractional epoch (:func:`epoch_position`), any other value plots that column."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for method, history in histories.items():
            if history is not None and column in history:
                position = epoch_position(history) if x == "epoch" else history[x]
                ax.plot(position, history[column], label=method, lw=1.2)
        ax.set_title(metric_label(column))
        ax.set_xlabel("epoch (fraction of the training set seen)" if x == "epoch" else x)
        ax.set_ylabel("loss per step (dimensionless)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def project_2d(embeddings: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D projection of row vectors with t-SNE or UMAP (cosine geometry, seeded)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), metric="cosine",
                         random_state=seed, n_jobs=1).fit_transform(x)
    raise ValueError(f"unknown projection {method!r}: use 'tsne' or 'umap'")


def embedding_scatter(panels: dict[str, tuple[np.ndarray, Sequence[str]]], method: str = "tsne",
                      seed: int = 0) -> plt.Figure:
    """One panel per embedding set: ``{title: (embeddings, labels)}``, points coloured by label."""
    labels_all = sorted({label for _, labels in panels.values() for label in labels})
    palette = {label: defect_colour(label) for label in labels_all}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.6), squeeze=False)
    for ax, (title, (emb, labels)) in zip(axes[0], panels.items()):
        xy = project_2d(emb, method, seed)
        labels = np.asarray(labels)
        for label in labels_all:
            sel = labels == label
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=18, color=palette[label], label=label,
                           marker="*" if label == "normal" else "o")
        ax.set_title(f"{title} ({method.upper()})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, frameon=False, title="state", title_fontsize=7)
    fig.subplots_adjust(right=0.82)
    return fig


def _state_styles(names: Sequence[str]) -> dict[str, tuple]:
    """Colour per state name (:func:`defect_colour`; ``*``-marked unseen names share their type's colour)."""
    return {name.rstrip("*"): defect_colour(name) for name in [*names, "normal", "anomaly"]}


def topology_scatter(panels: dict[str, dict], method: str = "tsne", seed: int = 0) -> plt.Figure:
    """Patch and state text embeddings projected together, one panel per model (DAPO Fig. 9).

    ``panels``: ``{title: {"patches": (N, D), "labels": N state names, "text": (S, D),
    "text_labels": S state names}}``. Patches are small points coloured by state (circles for
    seen types, triangles for names ending in ``*``, i.e. unseen in training); text embeddings
    are large crosses with a black edge, named. Each panel is projected on its own
    (:func:`project_2d` of patches and text together), in one thread: the projections are small,
    and OpenMP's multi-threaded Barnes-Hut t-SNE costs ~20x more CPU on a busy machine.
    """
    from threadpoolctl import threadpool_limits

    names = [n for p in panels.values() for n in (*p["labels"], *p["text_labels"])]
    colours = _state_styles(names)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False)
    legend = {}
    for ax, (title, panel) in zip(axes[0], panels.items()):
        patches, text = np.asarray(panel["patches"]), np.asarray(panel["text"])
        with threadpool_limits(1):
            xy = project_2d(np.vstack([patches, text]), method, seed)
        labels = np.asarray(panel["labels"])
        for name in dict.fromkeys(labels):
            sel = labels == name
            unseen = name.endswith("*")
            legend[name] = ax.scatter(xy[: len(patches)][sel, 0], xy[: len(patches)][sel, 1], s=9,
                                      color=colours[name.rstrip("*")], marker="^" if unseen else "o",
                                      alpha=0.35 if name == "normal" else 0.7, linewidths=0, label=name)
        anchors = xy[len(patches):]
        for rank, i in enumerate(np.argsort(anchors[:, 1])):  # names fanned out bottom to top: anchors crowd
            (x, y), name = anchors[i], panel["text_labels"][i]
            ax.scatter([x], [y], s=170, marker="P", color=colours[name.rstrip("*")], edgecolors="black",
                       linewidths=1.2, zorder=5)
            ax.annotate(f"'{name}'", (x, y), xytext=(8, 9 * (rank - (len(anchors) - 1) / 2)),
                        textcoords="offset points", fontsize=7, zorder=6, va="center",
                        arrowprops=dict(arrowstyle="-", lw=0.4, color="0.4"))
        ax.set_title(f"{title} ({method.upper()})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = list(legend.values()) + [plt.Line2D([], [], marker="P", color="w", markerfacecolor="white",
                                                  markeredgecolor="black", markersize=10, label="text embedding")]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False, markerscale=1.5)
    fig.subplots_adjust(right=1.0 - 1.4 / fig.get_figwidth(), wspace=0.05)  # 1.4 in for the legend
    return fig


def vocabulary_maps_figure(image, class_names: Sequence[str], type_probs, type_mask, *,
                           mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                           title: str = "") -> plt.Figure:
    """The vocabulary playground: the image, one probability map per typed defect name (channels
    1..K of ``type_probs`` (K+1, H, W)), and the argmax mask over normal + the names."""
    n_defects = len(class_names) - 1
    fig, axes = plt.subplots(1, n_defects + 3, figsize=(2.3 * (n_defects + 2) + 0.4, 2.9), squeeze=False,
                             gridspec_kw=dict(width_ratios=[1.0] * (n_defects + 1) + [0.07, 1.0]))
    _overlay(axes[0, 0], image, None, class_names, title or "image", mean, std)
    for k in range(1, n_defects + 1):
        ax = axes[0, k]
        shown = ax.imshow(np.asarray(type_probs[k]), cmap="magma", vmin=0.0, vmax=1.0)
        ax.set_title(f"p({class_names[k]})", fontsize=8)
        ax.axis("off")
    fig.colorbar(shown, cax=axes[0, -2]).ax.tick_params(labelsize=6)
    _overlay(axes[0, -1], image, type_mask, class_names, "argmax mask", mean, std)
    _legend(fig, class_names)
    fig.subplots_adjust(bottom=0.2, wspace=0.35)
    return fig


# ----------------------------------------------------------------------------- binary and multi-label


def _method_colours(methods: Sequence[str]) -> dict[str, tuple]:
    palette = plt.get_cmap("tab10").colors
    return {method: palette[i % len(palette)] for i, method in enumerate(methods)}


def _one_curve(frame: pd.DataFrame, product: str | None) -> pd.DataFrame:
    if product is not None and "product" in frame.columns:
        frame = frame[frame["product"] == product]
    if frame.empty:
        raise ValueError(f"no curve points for product {product!r}")
    return frame


def _pm_text(values: Sequence[float], fmt: str = ".3f") -> str:
    values = np.asarray(values, dtype=np.float64)
    if len(values) > 1:
        return f"{values.mean():{fmt}} ± {values.std(ddof=1):{fmt}}"
    return f"{values.mean():{fmt}}"


def roc_curves(curves: dict[str, Sequence[pd.DataFrame]], *, product: str | None = "pooled",
               title: str = "") -> plt.Figure:
    """DAPO Fig. 4(a): ROC curves, one colour per method (one line per seed) and the chance diagonal.

    ``curves``: ``{method: [ROC points per seed]}``, frames with ``fpr`` and ``tpr`` (and ``product``,
    filtered to ``product``; ``BinaryEvaluation.roc``). The legend gives each method's area under
    the drawn curves (mean ± std over seeds).
    """
    from sklearn.metrics import auc

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    colours = _method_colours(list(curves))
    for method, per_seed in curves.items():
        points = [_one_curve(frame, product) for frame in per_seed]
        label = f"{method} (AUC {_pm_text([auc(p['fpr'], p['tpr']) for p in points])})"
        for index, curve in enumerate(points):
            ax.plot(curve["fpr"], curve["tpr"], color=colours[method], lw=1.4, alpha=0.8,
                    label=None if index else label)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance (AUC 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", title="AUC of the drawn (pooled) curve,\nmean ± std over seeds",
              title_fontsize=6)
    fig.tight_layout()
    return fig


def confusion_matrices(counts: dict[str, Sequence[pd.DataFrame | pd.Series | dict]], *, threshold: float = 0.5,
                       product: str | None = "pooled", title: str = "") -> plt.Figure:
    """DAPO Fig. 4(b, c): one 2 x 2 confusion matrix per method at ``threshold`` (``score >= t`` is
    anomalous), shade = the share of the row's true class (0-100 %, said on the x label, so the
    shade does not follow the class sizes), cells annotated with the
    image counts, mean ± std over the seeds.

    ``counts``: ``{method: [counts per seed]}``: rows with ``threshold, tp, fp, fn, tn`` (and ``product``,
    filtered to ``product``; ``BinaryEvaluation.rates``) or one dict/Series of ``tp, fp, fn, tn``.
    """
    import seaborn as sns

    fig, axes = plt.subplots(1, len(counts), figsize=(3.3 * len(counts), 3.1), squeeze=False)
    for ax, (method, per_seed) in zip(axes[0], counts.items()):
        matrices = []
        for entry in per_seed:
            if isinstance(entry, pd.DataFrame):
                rows = _one_curve(entry, product)
                rows = rows[np.isclose(rows["threshold"], threshold)]
                if len(rows) != 1:
                    raise ValueError(f"{method}: expected one row at threshold {threshold}, found {len(rows)}")
                entry = rows.iloc[0]
            matrices.append([[entry["tn"], entry["fp"]], [entry["fn"], entry["tp"]]])
        matrices = np.asarray(matrices, dtype=np.float64)
        mean = matrices.mean(axis=0)
        share = 100.0 * mean / np.maximum(mean.sum(axis=1, keepdims=True), 1e-12)
        text = [[_pm_text(matrices[:, i, j], ".0f" if len(matrices) == 1 else ".1f") for j in range(2)]
                for i in range(2)]
        sns.heatmap(share, annot=np.asarray(text), fmt="", cmap="Blues", vmin=0, vmax=100, ax=ax, square=True,
                    xticklabels=["normal", "anomalous"], yticklabels=["normal", "anomalous"],
                    annot_kws={"fontsize": 8}, cbar=False)
        ax.set_xlabel("predicted (images; shade: % of the true class, 0-100)", fontsize=8)
        ax.set_ylabel("true (images)")
        ax.set_title(f"{method} (threshold {threshold:g})", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def threshold_curves(panels: dict[str, Sequence[pd.DataFrame]], *, columns: Sequence[str] = ("tpr", "fpr"),
                     labels: Sequence[str] | None = None, product: str | None = "pooled", ylabel: str = "rate",
                     mark: float | None = 0.5, title: str = "") -> plt.Figure:
    """DAPO Fig. 10 (and Table 11's precision / recall): ``columns`` against the threshold, one panel
    per method, mean over seeds with a ± std band.

    ``panels``: ``{method: [frame per seed]}`` with ``threshold`` and ``columns`` (and ``product``,
    filtered to ``product``: ``BinaryEvaluation.rates``, ``MultiLabelEvaluator.threshold_curve``).
    ``mark`` draws a dotted vertical line at that threshold (the paper's 0.5; ``None``: none).
    """
    labels = list(labels or [c.upper() if c in ("tpr", "fpr") else c for c in columns])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10").colors
    for ax, (method, per_seed) in zip(axes[0], panels.items()):
        frames = [_one_curve(frame, product).sort_values("threshold") for frame in per_seed]
        thresholds = frames[0]["threshold"].to_numpy()
        if any(not np.array_equal(f["threshold"].to_numpy(), thresholds) for f in frames):
            raise ValueError(f"{method}: the seeds' curves have different thresholds")
        for index, (column, label) in enumerate(zip(columns, labels)):
            values = np.stack([f[column].to_numpy(dtype=np.float64) for f in frames])
            mean = values.mean(axis=0)
            ax.plot(thresholds, mean, color=colours[index], lw=1.5, label=label)
            if len(frames) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(thresholds, mean - std, mean + std, color=colours[index], alpha=0.2, lw=0)
        if mark is not None:
            ax.axvline(mark, color="grey", ls=":", lw=1)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def multilabel_heatmap(share: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Which predicted defect types fire (columns) for which true types (rows, ``normal`` last):
    a seaborn heatmap of percentages (:func:`dapo.experiments.tables.multilabel_firing`); blank = no product
    has both types."""
    import seaborn as sns

    height = 0.42 * len(share.index) + 1.6
    width = 0.55 * len(share.columns) + 2.6
    fig, ax = plt.subplots(figsize=(width, height))
    sns.heatmap(share.astype(float), annot=True, fmt=".0f", cmap="rocket_r", vmin=0, vmax=100,
                mask=share.isna(), ax=ax, cbar_kws={"label": "% of images firing"}, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted type (P > threshold)")
    ax.set_ylabel("true type")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- ablations


def sweep_lines(table: pd.DataFrame, x: str, metrics: Sequence[str], *, hue: str | None = None,
                panel: str = "dataset", logx: bool = False, paper: pd.DataFrame | None = None,
                xlabel: str | None = None, ylabel: str = "%", title: str = "") -> plt.Figure:
    """DAPO Figs. 5-8 (and Table 6 as a figure): each metric against the swept setting ``x``, mean over
    the seeds with ± std error bars (seaborn ``lineplot``, ``errorbar="sd"``), one line per ``hue``
    value, one row of panels per ``panel`` value (a dataset), one column per metric.

    ``table``: one row per seed and setting with a column per metric
    (:func:`dapo.experiments.ablations.ablation_table`). A non-numeric ``x`` (``"mean"`` / ``"attention"``) is
    drawn as categories in order of appearance; ``logx`` for a geometric grid (lambda).
    ``paper``: optional reported points (columns ``panel``, ``x``, ``hue``, metric columns) drawn
    as hollow markers, labelled as reported. Each ``hue`` value has its own marker and dash
    pattern too, so a line hidden under another stays visible.
    """
    import seaborn as sns

    missing = [c for c in (x, *metrics, *(k for k in (hue, panel) if k)) if c not in table.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError("nothing to plot: the table is empty")
    panels = list(dict.fromkeys(table[panel])) if panel else [None]
    fig, axes = plt.subplots(len(panels), len(metrics), figsize=(3.3 * len(metrics), 2.8 * len(panels) + 0.4),
                             squeeze=False)
    numeric = pd.api.types.is_numeric_dtype(table[x])
    data = table if numeric else table.assign(**{x: pd.Categorical(table[x], list(dict.fromkeys(table[x])))})
    hue_order = list(dict.fromkeys(table[hue])) if hue else None
    for row, name in enumerate(panels):
        frame = data if name is None else data[data[panel] == name]
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            styled = dict(style=hue, style_order=hue_order, markers=True, dashes=True) if hue else dict(marker="o")
            sns.lineplot(data=frame, x=x, y=metric, hue=hue, hue_order=hue_order, errorbar="sd", err_style="bars",
                         err_kws={"capsize": 3}, ax=ax, legend=(row == 0 and col == 0) and bool(hue), **styled)
            if paper is not None and name in set(paper.get(panel, [])) and metric in paper.columns:
                reported = paper[paper[panel] == name]
                ax.scatter(reported[x], reported[metric], facecolors="none", edgecolors="k", s=40, zorder=5,
                           label="paper (reported)")
            if logx and numeric:
                ax.set_xscale("log", base=2)
            if numeric:
                ax.set_xticks(sorted(set(frame[x])))
                ax.set_xticklabels([f"{v:g}" for v in sorted(set(frame[x]))])
            ax.set_xlabel(xlabel or x)
            label = metric_label(metric)
            ax.set_ylabel(f"{label} ({ylabel}), mean ± std over seeds" if col == 0 else f"{label} ({ylabel})")
            ax.set_title(f"{name}: {label}" if name is not None else label, fontsize=9)
            ax.grid(alpha=0.3)
    if hue and axes[0, 0].get_legend() is not None:
        axes[0, 0].legend(fontsize=7, title=hue, title_fontsize=7)  # seaborn's legend, one entry per hue
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- notebooks

#: Resolution of the figures a notebook shows (the files in ``figures/`` keep
#: :func:`dapo.experiments.reporting.save_figure`'s own dpi).
DISPLAY_DPI = 72


def notebook_display(dpi: int = DISPLAY_DPI) -> None:
    """Show figures in notebooks at screen resolution (``figure.dpi``), so executed notebooks stay
    small; saved figures are unaffected (``save_figure`` passes its own dpi)."""
    plt.rcParams["figure.dpi"] = dpi
