"""Training loop: Adam on the learned parameters only, per-epoch checkpoints, exact resume, loss CSV.

``train(model, dataset, out_dir, training)`` trains on any torch ``Dataset`` that returns the
sample dict of docs/ARCHITECTURE.md, with the dataset-wide defect vocabulary (the dataset must
be opened with ``vocab_scope="dataset"`` so that its ``type_mask`` ids index
``dataset.dataset_vocabulary``). ``training`` is a :class:`~dapo.methods.recipe.TrainConfig` (the
method's recipe, :func:`dapo.methods.training_for`). Data order is seeded per epoch, so a
resumed run sees the same batches as an uninterrupted one and ends with the same weights. The
forward pass runs in ``training.precision`` (bf16 autocast on CUDA and bf16-capable CPUs with
``"auto"``); parameters, optimiser state and losses stay fp32.

Files in ``out_dir``, written atomically in this order at the end of every epoch:
``loss_history.csv`` (one row per step), ``optimizer_state_epoch_NNN.pt`` (Adam's state), then
``epoch_NNN.safetensors`` (learned parameters + configs, :mod:`dapo.engine.checkpoint`), whose
presence marks the epoch complete; older optimiser states are removed afterwards. A kill at any
point therefore leaves a consistent last epoch to resume from. ``config.json`` is a readable
copy of the configuration.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from dapo.engine.checkpoint import (  # noqa: F401
    CheckpointError,
    epoch_path,
    latest_checkpoint,
    list_checkpoints,
    load_learned,
    load_trained,
    read_checkpoint,
    save_checkpoint,
)
from dapo.engine.checkpoint_store import folder_lock
from dapo.engine.distributed import (
    average_gradients,
    average_values,
    barrier,
    broadcast_parameters,
    current,
    split_batches,
)
from dapo.methods.contract import AnomalyModel
from dapo.methods.recipe import TrainConfig
from dapo.util.atomic import atomic_path, write_text
from dapo.util.loading import load_state
from dapo.util.precision import autocast, resolve_device, resolve_precision
from dapo.util.progress import tqdm

LOSS_CSV = "loss_history.csv"
CONFIG_JSON = "config.json"
STATE_FILE = "optimizer_state_epoch_{:03d}.pt"
STATE_PATTERN = re.compile(r"optimizer_state_epoch_(\d+)\.pt$")
LOSS_COLUMNS = ("epoch", "step", "global_step", "loss_total", "loss_global", "loss_local")

__all__ = ["CheckpointExistsError", "ResumeError", "TrainResult", "train", "training_step", "load_history", "load_trained",
           "latest_checkpoint"]


class ResumeError(RuntimeError):
    """A run folder cannot be resumed exactly; the message says what is missing."""


class CheckpointExistsError(ValueError):
    """A fresh training was asked for in a folder that already holds checkpoints (never overwritten)."""


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


def training_step(model: AnomalyModel, optimizer: torch.optim.Optimizer, batch: dict | None,
                  vocabulary: Sequence[str], precision: str = "auto", *,
                  share: tuple[int, int] | None = None) -> dict[str, float]:
    """One optimiser step on a collated batch; returns the loss terms as floats.

    ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``, see :func:`dapo.util.precision.resolve_precision`)
    sets the forward pass's compute dtype; the learned parameters, their gradients, the
    optimiser state and the losses stay float32. ``share`` (this rank's and the global batch's
    sample counts) makes it a data-parallel step: gradients and loss terms are averaged over
    the ranks (:func:`dapo.engine.distributed.average_gradients`); ``batch`` is ``None`` on a rank
    without samples in this step.
    """
    if batch is None:
        if share is None:
            raise ValueError("an empty batch is only possible in a data-parallel step (share=...)")
        return _shared_step(optimizer, {"total": 0.0, "global": 0.0, "local": 0.0}, share)
    device = model.device
    images = batch["image"].to(device, non_blocking=True)
    labels = torch.as_tensor(batch["label"]).to(device)
    type_masks = batch["type_mask"].to(device, non_blocking=True)
    if model.binary:
        type_masks = (type_masks > 0).long()
    products = batch.get("product") if model.uses_product_names else None
    with autocast(device, precision):
        output = model(images, vocabulary, products=products)
    terms = model.loss_terms(output, labels, type_masks)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    values = {name: float(value.detach()) for name, value in terms.items()}
    if share is not None:
        return _shared_step(optimizer, values, share)
    optimizer.step()
    return values


def _shared_step(optimizer: torch.optim.Optimizer, values: dict[str, float], share: tuple[int, int]
                 ) -> dict[str, float]:
    """Average gradients and loss terms over the ranks (weights: their shares of the batch), then step."""
    if share[0] == 0:  # no samples here: contribute no gradient
        optimizer.zero_grad(set_to_none=True)
    average_gradients([p for group in optimizer.param_groups for p in group["params"]], *share)
    optimizer.step()
    return average_values(values, *share)


def make_optimizer(params: list[torch.nn.Parameter], training: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of a recipe (Adam; lr, betas and weight decay from ``training``)."""
    return torch.optim.Adam(params, lr=training.lr, betas=training.betas, weight_decay=training.weight_decay)


def _collate_or_none(collate_fn: Callable, samples: list) -> dict | None:
    """``collate_fn(samples)``; ``None`` for a rank's empty share of a global batch."""
    return collate_fn(samples) if samples else None


def _default_collate() -> Callable:
    from dapo.data import collate_samples

    return collate_samples


def state_path(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / STATE_FILE.format(epoch)


def _state_files(out_dir: Path) -> dict[int, Path]:
    found = [(STATE_PATTERN.search(p.name), p) for p in Path(out_dir).iterdir()] if Path(out_dir).is_dir() else []
    return {int(m.group(1)): p for m, p in found if m}


def check_same_run(meta: dict, model: AnomalyModel, vocabulary: tuple[str, ...], training: TrainConfig, where: Path) -> None:
    """Raise ``ValueError`` naming every difference between a checkpoint's recipe and the requested one."""
    differences = []
    if meta["config"] != model.config:
        saved, wanted = meta["config"].to_dict(), model.config.to_dict()
        differences += [f"{k}: saved {saved[k]!r}, requested {wanted[k]!r}" for k in wanted if saved[k] != wanted[k]]
    if tuple(meta["vocabulary"] or ()) != tuple(vocabulary):
        differences.append(f"vocabulary: saved {meta['vocabulary']}, requested {list(vocabulary)}")
    if meta.get("training") is not None and meta["training"].identity() != training.identity():
        saved, wanted = meta["training"].identity(), training.identity()
        differences += [f"training.{k}: saved {saved[k]!r}, requested {wanted[k]!r}" for k in wanted
                        if saved[k] != wanted[k]]
    if differences:
        raise ValueError(f"{where} holds checkpoints of another configuration ({'; '.join(differences)}); "
                         f"checkpoints are never overwritten: train into another folder")


def _resume(model: AnomalyModel, optimizer: torch.optim.Optimizer, out_dir: Path, vocabulary: tuple[str, ...],
            training: TrainConfig) -> tuple[int, list[dict]]:
    """Load the last completed epoch (up to ``training.epochs``); return it and the loss rows so far."""
    completed = [c for c in list_checkpoints(out_dir) if c.epoch <= training.epochs]
    if not completed:
        return 0, []
    latest = completed[-1]
    tensors, meta = read_checkpoint(latest.path)
    check_same_run(meta, model, vocabulary, training, out_dir)
    if latest.epoch == training.epochs:  # nothing left to train: the optimiser state is not needed
        load_learned(model, tensors, latest.path)
        return latest.epoch, _history_rows(out_dir, latest.epoch)
    state_file = state_path(out_dir, latest.epoch)
    if not state_file.is_file():
        raise ResumeError(f"{out_dir} holds {latest.path.name} but not its optimiser state {state_file.name}: "
                          f"training cannot continue exactly from epoch {latest.epoch}; checkpoints are never "
                          f"overwritten: train into another folder (or delete this one yourself)")
    rows = _history_rows(out_dir, latest.epoch)
    load_learned(model, tensors, latest.path)
    state = load_state(state_file, "optimiser state", model.device)
    optimizer.load_state_dict(state["optimizer"])
    return latest.epoch, rows


def _history_rows(out_dir: Path, epoch: int) -> list[dict]:
    """Loss rows of epochs 1..epoch; every epoch must be there (else :class:`ResumeError`)."""
    path = out_dir / LOSS_CSV
    rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
    rows = [row for row in rows if row["epoch"] <= epoch]
    missing = sorted(set(range(1, epoch + 1)) - {int(row["epoch"]) for row in rows})
    if missing:
        raise ResumeError(f"{path} lacks the loss rows of epoch(s) {missing} although {epoch_path(out_dir, epoch).name} "
                          f"exists; train into another folder (or delete this one yourself)")
    return rows


def train(model: AnomalyModel, dataset: Dataset, out_dir: str | Path, training: TrainConfig | None = None, *,
          device: str | torch.device | None = None, resume: bool = True, num_workers: int = 0,
          progress: bool = True, vocabulary: Sequence[str] | None = None, collate_fn: Callable | None = None,
          **overrides) -> TrainResult:
    """Train ``model`` in place with the recipe ``training`` (default :class:`TrainConfig`: Adam,
    lr 1e-3, batch 8, 5 epochs); ``overrides`` change single fields (``epochs=2``).

    ``resume`` continues from the last completed epoch in ``out_dir`` (same configuration,
    vocabulary and recipe required, else ``ValueError``); ``resume=False`` insists on a fresh
    start and raises :class:`CheckpointExistsError` if ``out_dir`` holds checkpoints: they are
    never rewritten or removed (:mod:`dapo.engine.checkpoint_store`). One process trains a folder at a
    time (:class:`~dapo.engine.checkpoint_store.FolderBusyError` for a second one).
    ``collate_fn`` defaults to :func:`dapo.data.collate_samples`.
    """
    training = (training or TrainConfig()).with_overrides(**overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocabulary = training_vocabulary(dataset, vocabulary)
    device = resolve_device(device)
    precision = resolve_precision(training.precision, device)
    model.to(device).train()
    params = list(model.learnable_parameters().values())
    if not params:
        raise ValueError(f"{model.config.name} is training-free (no learnable parameters): evaluate it as it is")
    with folder_lock(out_dir, wait=False):
        return _train_locked(model, dataset, out_dir, training, device, precision, params, resume, num_workers,
                             progress, vocabulary, collate_fn)


def _train_locked(model, dataset, out_dir, training, device, precision, params, resume, num_workers, progress,
                  vocabulary, collate_fn) -> TrainResult:
    if not resume and list_checkpoints(out_dir):
        raise CheckpointExistsError(f"{out_dir} already holds {list_checkpoints(out_dir)[-1].path.name}: checkpoints "
                                    f"are never overwritten; train into another folder (or delete this one "
                                    f"yourself) for a fresh start")
    torch.manual_seed(training.seed)
    optimizer = make_optimizer(params, training)
    training = training.with_overrides(precision=precision)  # checkpoints record the precision actually used
    done, rows = _resume(model, optimizer, out_dir, vocabulary, training)
    world = current()
    if world.main and done < training.epochs:
        write_text(out_dir / CONFIG_JSON, json.dumps(
            {"config": model.config.to_dict(), "training": training.to_dict(), "precision_resolved": precision,
             "backbone": model.backbone.describe(), "vocabulary": list(vocabulary)}, indent=2) + "\n")
    broadcast_parameters(params)
    collate_fn = collate_fn or _default_collate()
    global_step = rows[-1]["global_step"] + 1 if rows else 0
    for epoch in range(done + 1, training.epochs + 1):
        if hasattr(dataset, "set_epoch"):  # seeded augmentation (dapo.data.augment)
            dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(training.seed * 1000 + epoch)
        shares = None
        if world.size > 1:  # data parallel: this rank's part of every global batch, from the same order
            order = tqdm(DataLoader(range(len(dataset)), batch_size=training.batch_size, shuffle=True,
                                    generator=generator), disable=True)  # one process's draws (tqdm iterates once more)
            local, shares = split_batches([indices.tolist() for indices in order], world)
            loader = DataLoader(dataset, batch_sampler=local, num_workers=num_workers,
                                collate_fn=functools.partial(_collate_or_none, collate_fn),
                                pin_memory=device.type == "cuda")
        else:
            loader = DataLoader(dataset, batch_size=training.batch_size, shuffle=True, num_workers=num_workers,
                                collate_fn=collate_fn, generator=generator, pin_memory=device.type == "cuda")
        bar = tqdm(loader, desc=f"{model.config.name} epoch {epoch}/{training.epochs}",
                   disable=not progress or not world.main)
        for step, batch in enumerate(bar):
            terms = training_step(model, optimizer, batch, vocabulary, precision,
                                  share=None if shares is None else shares[step])
            rows.append({"epoch": epoch, "step": step, "global_step": global_step, "loss_total": terms["total"],
                         "loss_global": terms["global"], "loss_local": terms["local"]})
            global_step += 1
            bar.set_postfix(loss=f"{terms['total']:.4f}")
        if world.main:  # one writer; the other ranks wait until the epoch is on disk
            _save_epoch(model, optimizer, out_dir, epoch, vocabulary, training, rows)
        barrier()
    history = pd.DataFrame(rows, columns=LOSS_COLUMNS)
    checkpoints = [c.path for c in list_checkpoints(out_dir) if c.epoch <= training.epochs]
    return TrainResult(history, checkpoints, out_dir, vocabulary)


def _save_epoch(model: AnomalyModel, optimizer: torch.optim.Optimizer, out_dir: Path, epoch: int,
                vocabulary: tuple[str, ...], training: TrainConfig, rows: list[dict]) -> None:
    """Loss CSV, optimiser state, then the checkpoint (its presence marks the epoch complete)."""
    if epoch_path(out_dir, epoch).exists():  # never reached by train(); the guard of immutability
        raise CheckpointExistsError(f"{epoch_path(out_dir, epoch)} exists: checkpoints are never overwritten")
    with atomic_path(out_dir / LOSS_CSV) as temporary:
        pd.DataFrame(rows, columns=LOSS_COLUMNS).to_csv(temporary, index=False)
    with atomic_path(state_path(out_dir, epoch)) as temporary:
        torch.save({"epoch": epoch, "optimizer": optimizer.state_dict()}, temporary)
    save_checkpoint(model, epoch_path(out_dir, epoch), epoch=epoch, vocabulary=vocabulary, training=training)
    for older, path in _state_files(out_dir).items():
        if older != epoch:
            path.unlink(missing_ok=True)


def load_history(out_dir: str | Path, epochs: int | None = None) -> pd.DataFrame:
    """The loss history written by :func:`train` (one row per step), optionally of epochs 1..``epochs``."""
    path = Path(out_dir) / LOSS_CSV
    if not path.is_file():
        raise FileNotFoundError(f"no loss history at {path} (train there first)")
    history = pd.read_csv(path)
    return history if epochs is None else history[history["epoch"] <= epochs].reset_index(drop=True)
