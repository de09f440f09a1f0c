"""Training loop: Adam on the learned parameters only, per-epoch checkpoints, resume, loss CSV.

``train(model, dataset, out_dir)`` trains on any torch ``Dataset`` that returns the sample
dict of docs/ARCHITECTURE.md, with the dataset-wide defect vocabulary (the dataset must be
opened with ``vocab_scope="dataset"`` so that its ``type_mask`` ids index
``dataset.dataset_vocabulary``). Data order is seeded per epoch, so a resumed run sees the
same batches as an uninterrupted one. On CUDA the forward pass runs under bf16 autocast;
on the CPU in float32.

Files in ``out_dir``: ``epoch_001.safetensors`` ... (learned parameters + config, see
:mod:`dapo.checkpoint`), ``loss_history.csv`` (one row per step), ``config.json`` (readable
copy of the config) and ``resume_state.pt`` (optimiser state of the last epoch, for resume).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dapo.checkpoint import (epoch_path, latest_checkpoint, list_checkpoints, load_learned, load_trained,  # noqa: F401
                             read_checkpoint, save_checkpoint)
from dapo.losses import loss_terms
from dapo.model import DAPO
from dapo.precision import autocast, resolve_device

LOSS_CSV = "loss_history.csv"
RESUME_FILE = "resume_state.pt"
CONFIG_JSON = "config.json"
LOSS_COLUMNS = ("epoch", "step", "global_step", "loss_total", "loss_global", "loss_local")

__all__ = ["TrainResult", "train", "training_step", "load_history", "load_trained", "latest_checkpoint"]


@dataclass
class TrainResult:
    """Loss history (one row per step), the per-epoch checkpoints and the training vocabulary."""

    history: pd.DataFrame
    checkpoints: list[Path]
    out_dir: Path
    vocabulary: tuple[str, ...]

    @property
    def final(self) -> Path | None:
        return self.checkpoints[-1] if self.checkpoints else None


def training_vocabulary(dataset: Dataset, vocabulary: Sequence[str] | None = None) -> tuple[str, ...]:
    """The vocabulary ``type_mask`` ids index: ``dataset.dataset_vocabulary`` unless given."""
    scope = getattr(dataset, "vocab_scope", "dataset")
    if scope != "dataset":
        raise ValueError(f"training needs type_mask ids over the dataset-wide vocabulary: open the dataset with "
                         f"vocab_scope='dataset' (it has vocab_scope={scope!r})")
    if vocabulary is None:
        if not hasattr(dataset, "dataset_vocabulary"):
            raise ValueError("the dataset has no .dataset_vocabulary: pass vocabulary=(...) explicitly")
        vocabulary = dataset.dataset_vocabulary
    return tuple(vocabulary)


def training_step(model: DAPO, optimizer: torch.optim.Optimizer, batch: dict,
                  vocabulary: Sequence[str], precision: str = "auto") -> dict[str, float]:
    """One optimiser step on a collated batch; returns the loss terms as floats.

    ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``, see :func:`dapo.precision.resolve_precision`)
    sets the forward pass's compute dtype; the learned parameters, their gradients, the
    optimiser state and the losses stay float32.
    """
    device = model.device
    images = batch["image"].to(device, non_blocking=True)
    labels = torch.as_tensor(batch["label"]).to(device)
    type_masks = batch["type_mask"].to(device, non_blocking=True)
    if model.binary:
        type_masks = (type_masks > 0).long()
    products = batch.get("product") if model.uses_product_names else None
    with autocast(device, precision):
        output = model(images, vocabulary, products=products)
    terms = loss_terms(output, labels, type_masks, lam=model.config.lam, gamma=model.config.focal_gamma)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return {name: float(value.detach()) for name, value in terms.items()}


def _default_collate() -> Callable:
    from dapo.data import collate_samples

    return collate_samples


def _clear_run(out_dir: Path) -> None:
    for checkpoint in list_checkpoints(out_dir):
        checkpoint.path.unlink()
    for name in (LOSS_CSV, RESUME_FILE):
        (out_dir / name).unlink(missing_ok=True)


def _resume(model: DAPO, optimizer: torch.optim.Optimizer, out_dir: Path, vocabulary: tuple[str, ...],
            epochs: int) -> tuple[int, list[dict]]:
    """Load the last completed epoch (up to ``epochs``) from ``out_dir``; return it and the loss rows so far."""
    completed = [c for c in list_checkpoints(out_dir) if c.epoch <= epochs]
    if not completed:
        return 0, []
    latest = completed[-1]
    tensors, meta = read_checkpoint(latest.path)
    if meta["config"] != model.config:
        raise ValueError(f"{out_dir} holds checkpoints of another configuration; pass resume=False to start "
                         f"afresh (they are removed) or choose another out_dir")
    if tuple(meta["vocabulary"] or ()) != vocabulary:
        raise ValueError(f"{out_dir} was trained with vocabulary {meta['vocabulary']}, not {list(vocabulary)}")
    load_learned(model, tensors, latest.path)
    state_file = out_dir / RESUME_FILE
    if state_file.is_file():
        state = torch.load(state_file, map_location=model.device, weights_only=True)
        if state["epoch"] == latest.epoch:
            optimizer.load_state_dict(state["optimizer"])
    rows = load_history(out_dir).to_dict("records") if (out_dir / LOSS_CSV).is_file() else []
    return latest.epoch, [row for row in rows if row["epoch"] <= latest.epoch]


def train(model: DAPO, dataset: Dataset, out_dir: str | Path, *, epochs: int = 5, batch_size: int = 8,
          lr: float = 1e-3, seed: int = 0, device: str | torch.device | None = None, resume: bool = True,
          num_workers: int = 0, progress: bool = True, vocabulary: Sequence[str] | None = None,
          collate_fn: Callable | None = None) -> TrainResult:
    """Train ``model`` in place (Adam, paper defaults: lr 1e-3, batch 8, 5 epochs).

    ``resume`` continues from the last checkpoint in ``out_dir`` (same config and vocabulary
    required); ``resume=False`` removes earlier checkpoints there and starts afresh.
    ``collate_fn`` defaults to :func:`dapo.data.collate_samples`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocabulary = training_vocabulary(dataset, vocabulary)
    device = resolve_device(device)
    model.to(device).train()
    params = list(model.learnable_parameters().values())
    if not params:
        raise ValueError(f"{model.config.name} has no learnable parameters: it needs no training")
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    if not resume:
        _clear_run(out_dir)
    done, rows = _resume(model, optimizer, out_dir, vocabulary, epochs)
    (out_dir / CONFIG_JSON).write_text(json.dumps(
        {"config": model.config.to_dict(), "backbone": model.backbone.describe(), "vocabulary": list(vocabulary),
         "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}, indent=2))
    collate_fn = collate_fn or _default_collate()
    global_step = rows[-1]["global_step"] + 1 if rows else 0
    for epoch in range(done + 1, epochs + 1):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                            collate_fn=collate_fn, generator=torch.Generator().manual_seed(seed * 1000 + epoch),
                            pin_memory=device.type == "cuda")
        bar = tqdm(loader, desc=f"{model.config.name} epoch {epoch}/{epochs}", disable=not progress)
        for step, batch in enumerate(bar):
            terms = training_step(model, optimizer, batch, vocabulary, "auto" if device.type == "cuda" else "fp32")
            rows.append({"epoch": epoch, "step": step, "global_step": global_step, "loss_total": terms["total"],
                         "loss_global": terms["global"], "loss_local": terms["local"]})
            global_step += 1
            bar.set_postfix(loss=f"{terms['total']:.4f}")
        save_checkpoint(model, epoch_path(out_dir, epoch), epoch=epoch, vocabulary=vocabulary)
        torch.save({"epoch": epoch, "optimizer": optimizer.state_dict()}, out_dir / RESUME_FILE)
        pd.DataFrame(rows, columns=LOSS_COLUMNS).to_csv(out_dir / LOSS_CSV, index=False)
    history = pd.DataFrame(rows, columns=LOSS_COLUMNS)
    checkpoints = [c.path for c in list_checkpoints(out_dir) if c.epoch <= epochs]
    return TrainResult(history, checkpoints, out_dir, vocabulary)


def load_history(out_dir: str | Path) -> pd.DataFrame:
    """The loss history written by :func:`train` (one row per step)."""
    path = Path(out_dir) / LOSS_CSV
    if not path.is_file():
        raise FileNotFoundError(f"no loss history at {path} (train there first)")
    return pd.read_csv(path)
