"""Small checkpoints: the learned parameters (safetensors) with the config that made them (JSON).

A checkpoint file holds only what training changes (context tokens, deep tokens, trainable
adapters: a few MB even for ViT-L-14-336) plus, in the safetensors metadata, the
method's configuration (its model ``family`` beside it), the backbone's identity, the epoch and the training
vocabulary as JSON, and the :class:`~dapo.methods.recipe.TrainConfig` it was trained with. The frozen
backbone is rebuilt from its own weights. Files are written atomically (:mod:`dapo.util.atomic`);
a file that cannot be read raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dapo.clip.backbone import Backbone
from dapo.methods.contract import AnomalyModel
from dapo.methods.recipe import TrainConfig
from dapo.util.atomic import atomic_path

FORMAT = "dapo-checkpoint/2"  # 2: DAPOConfig with the fidelity switches and the TrainConfig
OLDER_FORMATS = ("dapo-checkpoint/1",)
EPOCH_FILE = re.compile(r"epoch_(\d+)\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit what it is loaded into."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint on disk and the epoch it closes."""

    path: Path
    epoch: int


def epoch_path(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:03d}.safetensors"


def save_checkpoint(model: AnomalyModel, path: str | Path, *, epoch: int | None = None,
                    vocabulary: tuple[str, ...] | None = None, training: TrainConfig | None = None) -> Path:
    """Write the learned parameters, the config and the training recipe of ``model`` to ``path`` (atomically)."""
    path = Path(path)
    tensors = {name: p.detach().float().cpu().contiguous() for name, p in model.learnable_parameters().items()}
    metadata = {
        "format": FORMAT,
        "family": model.family,
        "config": json.dumps(model.config.to_dict()),
        "backbone": json.dumps(model.backbone.describe()),
        "epoch": json.dumps(epoch),
        "vocabulary": json.dumps(list(vocabulary) if vocabulary is not None else None),
        "training": json.dumps(training.to_dict() if training is not None else None),
    }
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def family_model(family: str) -> type[AnomalyModel]:
    """The model class a checkpoint's ``family`` names (:data:`dapo.methods.FAMILIES`)."""
    from dapo.methods import FAMILIES

    if family not in FAMILIES:
        raise CheckpointError(f"unknown model family {family!r} in a checkpoint; known: {sorted(FAMILIES)}")
    return FAMILIES[family]


def _read(path: str | Path, with_tensors: bool) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            if raw.get("format") in OLDER_FORMATS:
                raise CheckpointError(f"{path} was written by an older dapo ({raw['format']}): its configuration "
                                      f"predates settings whose defaults have changed, so loading it would "
                                      f"silently run another model; delete it and train again")
            if raw.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a DAPO checkpoint (format {raw.get('format')!r}, "
                                      f"expected {FORMAT!r})")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()} if with_tensors else {}
        meta = {key: json.loads(raw[key]) for key in ("backbone", "epoch", "vocabulary")}
        meta["family"] = raw.get("family", "dapo")  # files written before the method registry: DAPO's family
        meta["config"] = family_model(meta["family"]).config_class.from_dict(json.loads(raw["config"]))
        training = json.loads(raw.get("training", "null"))
        meta["training"] = TrainConfig.from_dict(training) if training is not None else None
    except CheckpointError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error} "
                              f"(truncated, or not written by dapo? delete it and train again)") from error
    return tensors, meta


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """Tensors and decoded metadata (``config`` as :class:`DAPOConfig`, ``training`` as :class:`TrainConfig`
    or ``None`` for older files, ``backbone``, ``epoch``, ``vocabulary``)."""
    return _read(path, with_tensors=True)


def read_metadata(path: str | Path) -> dict:
    """The decoded metadata of :func:`read_checkpoint`, without reading the tensors."""
    return _read(path, with_tensors=False)[1]


def same_backbone_weights(path: str | Path, backbone: Backbone) -> bool:
    """Whether a checkpoint was trained on ``backbone``'s weights file (``True`` when either
    side has no fingerprint, e.g. random weights or a checkpoint that predates it)."""
    saved = read_metadata(path)["backbone"].get("weights_sha256")
    current = backbone.weights_fingerprint
    return saved is None or current is None or saved == current


def load_learned(model: AnomalyModel, tensors: dict, source: str | Path = "checkpoint") -> None:
    """Copy saved learned parameters into ``model`` (names and shapes must match exactly)."""
    params = model.learnable_parameters()
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match the model: missing {missing}, unexpected {unexpected}")
    for name, param in params.items():
        if tuple(tensors[name].shape) != tuple(param.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, "
                             f"the model expects {tuple(param.shape)} (another backbone?)")
        param.data.copy_(tensors[name].to(param.device, param.dtype))


def load_trained(path: str | Path, backbone: Backbone) -> AnomalyModel:
    """Rebuild a trained model from a checkpoint on ``backbone`` (which must match the one trained on)."""
    tensors, meta = read_checkpoint(path)
    saved, current = meta["backbone"], backbone.describe()
    structural = ("tap_layers", "embed_dim", "vision_width", "text_width", "vision_layers", "text_layers")
    differs = [key for key in structural if saved.get(key) != current.get(key)]
    if differs:
        raise CheckpointError(f"{path} was trained on backbone {saved}; the given backbone differs in {differs}: "
                              f"{current}")
    if (saved.get("model_name"), saved.get("pretrained")) != (current["model_name"], current["pretrained"]):
        warnings.warn(f"{path} was trained on {saved.get('model_name')}/{saved.get('pretrained')}, "
                      f"loading it on {current['model_name']}/{current['pretrained']}", stacklevel=2)
    model = family_model(meta["family"])(backbone, meta["config"])
    load_learned(model, tensors, path)
    return model


def list_checkpoints(directory: str | Path) -> list[CheckpointInfo]:
    """Per-epoch checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(EPOCH_FILE.search(p.name), p) for p in directory.iterdir()]
    return sorted((CheckpointInfo(p, int(m.group(1))) for m, p in found if m), key=lambda c: c.epoch)


def latest_checkpoint(directory: str | Path) -> CheckpointInfo | None:
    """The checkpoint of the last completed epoch, or ``None``."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None
