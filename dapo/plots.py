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
