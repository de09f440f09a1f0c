"""Diagnosis of DAPO against MultiADS on the synthetic world (notebook 12, issue 15 item 6).

* (a) collapse: :func:`state_cosines` (cosine matrix of the state embeddings of a vocabulary,
  normal first) with :func:`cosine_summary`; :func:`collapse_counts` / :func:`collapse_on` at
  ground-truth defect pixels: how often the argmax is normal, how often the summed abnormal
  probability exceeds the normal one, and how often both (the defect mass is there but spread
  over the types so that normal wins the argmax).
* (b) world bias: :mod:`dapo.experiments.prompt_overlap` (caption overlap, held-out paraphrases) and the
  ``multiads_paraphrased`` preset of :mod:`dapo.methods`.
* (c) vision deep tokens: :func:`without_vision_tokens` (same learned weights, the tokens
  removed from the vision sequence) and :func:`parameter_drift` (how far each learned tensor
  moved from its seeded initialisation).
* (d) epochs and (e) the switches use :func:`dapo.experiments.sweep.sweep` and :mod:`dapo.experiments.fidelity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from dapo.experiments.sweep import Evaluation

COLLAPSE_COUNTS = ("defect_pixels", "argmax_normal", "abnormal_mass_wins", "hidden_by_argmax", "right_type")


def collapse_counts(type_probs: torch.Tensor, type_mask: torch.Tensor) -> dict[str, int]:
    """Counts over the ground-truth defect pixels (``type_mask > 0``) of ``(B, K+1, H, W)``
    per-type probabilities (channel 0 = normal) and ``(B, H, W)`` type ids:

    ``argmax_normal`` (the argmax is normal), ``abnormal_mass_wins`` (the summed defect channels
    exceed the normal channel), ``hidden_by_argmax`` (both: detected as a defect in sum, lost
    by the argmax), ``right_type`` (the argmax is the true type).
    """
    if type_probs.ndim != 4 or type_mask.shape != (type_probs.shape[0], *type_probs.shape[2:]):
        raise ValueError(f"need type_probs (B, K+1, H, W) and type_mask (B, H, W), got {tuple(type_probs.shape)} "
                         f"and {tuple(type_mask.shape)}")
    if int(type_mask.max()) >= type_probs.shape[1] or int(type_mask.min()) < 0:
        raise ValueError(f"type_mask ids must lie in [0, {type_probs.shape[1] - 1}], got "
                         f"{int(type_mask.min())}..{int(type_mask.max())}")
    probs = type_probs.float()
    defect = type_mask > 0
    argmax = probs.argmax(dim=1)
    mass_wins = probs[:, 1:].sum(dim=1) > probs[:, 0]
    argmax_normal = argmax == 0
    return {"defect_pixels": int(defect.sum()), "argmax_normal": int((defect & argmax_normal).sum()),
            "abnormal_mass_wins": int((defect & mass_wins).sum()),
            "hidden_by_argmax": int((defect & mass_wins & argmax_normal).sum()),
            "right_type": int((defect & (argmax == type_mask)).sum())}


def collapse_shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Counts as shares of the defect pixels, and ``hidden_of_mass_wins``: the share of the pixels
    whose abnormal mass wins that the argmax still calls normal."""
    total = counts["defect_pixels"]
    if total == 0:
        raise ValueError("no ground-truth defect pixels: the collapse statistic is undefined")
    shares = {key: counts[key] / total for key in COLLAPSE_COUNTS[1:]}
    wins = counts["abnormal_mass_wins"]
    shares["hidden_of_mass_wins"] = counts["hidden_by_argmax"] / wins if wins else float("nan")
    return shares


def collapse_on(datasets: Mapping[str, Any], *, device: str = "auto", name: str = "collapse/1") -> Evaluation:
    """:func:`collapse_shares` on every dataset, pooled over its products, each product scored
    over normal + its own defect types (the multi-type protocol); cached under ``name`` and the
    dataset names."""
    from dapo.experiments.runs import predict_products

    def fn(model) -> pd.DataFrame:
        rows = []
        for dataset_name, dataset in datasets.items():
            total = dict.fromkeys(COLLAPSE_COUNTS, 0)
            for _, _, batch, pred in predict_products(model, dataset, device=device, vocabulary="product",
                                                      progress=False):
                for key, value in collapse_counts(pred["type_probs"].cpu(), batch["type_mask"]).items():
                    total[key] += value
            rows += [{"dataset": dataset_name, "metric": key, "value": value}
                     for key, value in collapse_shares(total).items()]
        return pd.DataFrame(rows)
    return Evaluation(f"{name}-{'+'.join(datasets)}", fn)


@torch.no_grad()
def state_cosines(model, vocabulary: Sequence[str], product: str | None = None) -> pd.DataFrame:
    """Cosine similarities of the K+1 state embeddings (normal first) of ``vocabulary``."""
    embeddings = model.encode_text(tuple(vocabulary), product).float().cpu()
    names = model.state_names(tuple(vocabulary))
    return pd.DataFrame((embeddings @ embeddings.t()).numpy(), index=list(names), columns=list(names))


def cosine_summary(cosines: pd.DataFrame) -> dict[str, float]:
    """Mean, min and max cosine between two different defect states, and the mean cosine of
    normal to a defect state (a collapsed vocabulary has defect-defect cosines near 1)."""
    values = cosines.to_numpy()
    k = values.shape[0] - 1
    if k < 2:
        raise ValueError(f"need at least two defect states, got {k}")
    pairs = [values[i, j] for i in range(1, k + 1) for j in range(1, k + 1) if i != j]
    return {"defect_defect_mean": float(sum(pairs) / len(pairs)), "defect_defect_min": float(min(pairs)),
            "defect_defect_max": float(max(pairs)), "normal_defect_mean": float(values[0, 1:].mean())}


def without_vision_tokens(model):
    """The same learned weights with the vision deep tokens removed at inference: the vision
    sequence is ``[CLS, patches]`` as in frozen CLIP (no slot, no carry-over), while the text
    prompts, their deep tokens and the adapters stay as trained."""
    from dapo.experiments.fidelity import with_config

    if model.vision_deep is None:
        raise ValueError("the model has no vision deep tokens to remove")
    return with_config(model, vision_depth=0)


@torch.no_grad()
def parameter_drift(model) -> pd.DataFrame:
    """How far each learned tensor moved from its initialisation: one row per parameter with
    ``numel``, ``init_norm``, ``change_norm`` (L2 of trained - initial) and ``relative_change``
    (their ratio), and for deep tokens ``mean_row_norm`` (mean L2 norm of one token at init).

    The initialisation is rebuilt from the model's own config (its seed fixes every draw).
    """
    from dapo.methods.dapo.model import DAPO

    initial = dict(DAPO(model.backbone, model.config).learnable_parameters())
    rows = []
    for name, trained in model.learnable_parameters().items():
        start = initial[name].detach().float().cpu()
        change = trained.detach().float().cpu() - start
        row = {"parameter": name, "numel": start.numel(), "init_norm": float(start.norm()),
               "change_norm": float(change.norm())}
        row["relative_change"] = row["change_norm"] / row["init_norm"] if row["init_norm"] else float("nan")
        row["mean_row_norm"] = float(start.norm(dim=-1).mean()) if name.endswith("deep.tokens") else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- presets


def plot_cosines(matrices: Mapping[str, pd.DataFrame]):
    """Heatmaps of :func:`state_cosines` matrices side by side, one colour scale, values written in."""
    import matplotlib.pyplot as plt

    low = min(float(m.to_numpy().min()) for m in matrices.values())
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.4 * len(matrices), 4.0), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        image = ax.imshow(matrix.to_numpy(), vmin=low, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7)
        for (i, j), value in pd.DataFrame(matrix.to_numpy()).stack().items():
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if value > (low + 1) / 2 else "white")
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="cosine")
    return fig
