"""Figures of the notebooks: samples with per-type masks, qualitative predictions, loss curves,
and 2-D projections (t-SNE, UMAP) of prompt embeddings.

Functions take plain arrays and return a matplotlib Figure; saving (with the provenance
footer) is :func:`dapo.reporting.save_figure`'s job.
"""

from __future__ import annotations

from typing import Sequence

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


def type_colormap(n_classes: int) -> ListedColormap:
    """Class 0 (normal) transparent-black, defect classes from a qualitative palette."""
    palette = plt.get_cmap("tab20").colors
    colours = [(0, 0, 0, 0)] + [(*palette[i % len(palette)], 0.65) for i in range(max(n_classes - 1, 1))]
    return ListedColormap(colours)


def _overlay(ax, image, type_mask, n_classes: int, title: str = "", mean=None, std=None) -> None:
    ax.imshow(denormalise(image, mean, std))
    if type_mask is not None:
        ax.imshow(np.asarray(type_mask), cmap=type_colormap(n_classes), vmin=0, vmax=n_classes - 1,
                  interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _legend(fig, class_names: Sequence[str]) -> None:
    cmap = type_colormap(len(class_names))
    handles = [Patch(color=cmap(i), label=name) for i, name in enumerate(class_names) if i > 0]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7,
                   bbox_to_anchor=(0.5, 0.02), frameon=False)


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
        _overlay(ax, sample["image"], sample["type_mask"], len(class_names), f"{sample['product']}\n{defects}",
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
        _overlay(axes[0, j], images[j], None, len(class_names), titles[j], mean, std)
        _overlay(axes[1, j], images[j], true_masks[j], len(class_names), "ground truth", mean, std)
        _overlay(axes[2, j], images[j], pred_masks[j], len(class_names), "prediction", mean, std)
    _legend(fig, class_names)
    fig.subplots_adjust(bottom=0.08)
    return fig


def loss_curves(histories: dict[str, pd.DataFrame], columns: Sequence[str] = ("loss", "global", "local"),
                x: str = "step") -> plt.Figure:
    """One panel per loss column, one line per method."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for method, history in histories.items():
            if history is not None and column in history:
                ax.plot(history[x], history[column], label=method, lw=1.2)
        ax.set_title(column)
        ax.set_xlabel(x)
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
    palette = dict(zip(labels_all, plt.get_cmap("tab20").colors * 3))
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
    fig.legend(handles, names, loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(right=0.82)
    return fig


def _state_styles(names: Sequence[str]) -> dict[str, tuple]:
    """Colour per state name: normal grey, a binary model's single abnormal state black, defect types
    from tab10 in order of appearance (``*``-marked unseen names share their type's colour)."""
    palette = plt.get_cmap("tab10").colors
    styles, order = {"normal": (0.6, 0.6, 0.6), "anomaly": (0.0, 0.0, 0.0)}, []
    for name in names:
        base = name.rstrip("*")
        if base not in styles and base not in order:
            order.append(base)
    styles.update({base: palette[i % len(palette)] for i, base in enumerate(order)})
    return styles


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
    _overlay(axes[0, 0], image, None, len(class_names), title or "image", mean, std)
    for k in range(1, n_defects + 1):
        ax = axes[0, k]
        shown = ax.imshow(np.asarray(type_probs[k]), cmap="magma", vmin=0.0, vmax=1.0)
        ax.set_title(f"p({class_names[k]})", fontsize=8)
        ax.axis("off")
    fig.colorbar(shown, cax=axes[0, -2]).ax.tick_params(labelsize=6)
    _overlay(axes[0, -1], image, type_mask, len(class_names), "argmax mask", mean, std)
    _legend(fig, class_names)
    fig.subplots_adjust(bottom=0.2, wspace=0.35)
    return fig
