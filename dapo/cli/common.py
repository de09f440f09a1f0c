"""What the subcommands share: argument groups, one-line errors, the output folder, the model.

Errors a user can fix (a bad argument, a missing or unreadable file) are :class:`UsageError`
s: ``dapo`` prints them as one line naming the argument or file and exits with status 2, the
argparse convention. Library errors are turned into them where the argument is known
(:func:`argument_errors`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from dapo.util.paths import REPO_ROOT

#: The synthetic-profile DAPO checkpoint (seed 0, epoch 2) that ``make reproduce`` writes
#: (trained on the compact backbone at 128 px): the default ``--checkpoint``.
DEFAULT_CHECKPOINT = REPO_ROOT / "results" / "synthetic" / "checkpoints" / "dapo" / "default" / "seed0" / \
    "epoch_002.safetensors"
COMPACT_BACKBONE = "dapo-compact"
COMPACT_PRETRAINED = "synthetic"
COMPACT_IMAGE_SIZE = 128
PAPER_IMAGE_SIZE = 518
NO_WEIGHTS = "none"


class UsageError(Exception):
    """A bad argument or input file: printed as one line, exit status 2."""


def one_line(message: object) -> str:
    """``message`` on one line (the lines of multi-line library messages joined by ``; ``)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines)


@contextlib.contextmanager
def argument_errors(argument: str, *kinds: type[BaseException]) -> Iterator[None]:
    """Re-raise ``kinds`` raised inside as a :class:`UsageError` that names ``argument``."""
    try:
        yield
    except kinds as error:
        raise UsageError(f"{argument}: {one_line(error)}") from error


@contextlib.contextmanager
def warnings_as_lines(stream) -> Iterator[None]:
    """Print every warning as one ``dapo: warning: ...`` line on ``stream`` (each message once)."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = one_line(message)
        if text not in shown:
            shown.add(text)
            print(f"dapo: warning: {text}", file=stream, flush=True)

    def not_random_init(record: logging.LogRecord) -> bool:  # OpenCLIP logs it; stated once by the CLI instead
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(not_random_init)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            yield
    finally:
        root.removeFilter(not_random_init)


# ----------------------------------------------------------------------------- arguments


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in ``--help`` (options whose default depends on other arguments say so in
    their help); descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def add_backbone_arguments(parser: argparse.ArgumentParser, *, from_checkpoint: bool) -> None:
    """``--backbone``, ``--pretrained``, ``--clip-weights``, ``--image-size``."""
    group = parser.add_argument_group("backbone (frozen OpenCLIP ViT)")
    if from_checkpoint:
        name_default = pretrained_default = size_default = "the checkpoint's"
    else:
        name_default = COMPACT_BACKBONE
        pretrained_default = f"{COMPACT_PRETRAINED} for {COMPACT_BACKBONE}, else openai"
        size_default = f"{COMPACT_IMAGE_SIZE} for {COMPACT_BACKBONE}, else the paper's {PAPER_IMAGE_SIZE}"
    group.add_argument("--backbone", metavar="NAME",
                       help=f"OpenCLIP model name, e.g. ViT-L-14-336 (the paper's) or {COMPACT_BACKBONE} (this "
                            f"project's compact synthetic CLIP) (default: {name_default})")
    group.add_argument("--pretrained", metavar="TAG",
                       help=f"OpenCLIP weights tag such as openai, '{COMPACT_PRETRAINED}' (the committed compact "
                            f"weights), a weights file, or '{NO_WEIGHTS}' for random weights (default: "
                            f"{pretrained_default})")
    group.add_argument("--clip-weights", metavar="FILE",
                       help="local OpenCLIP weights file for --pretrained, for machines without internet "
                            "(default: the tag's cache or download)")
    group.add_argument("--image-size", metavar="PX", type=positive_int,
                       help=f"model input size in pixels; images are resized to it (default: {size_default})")


def add_run_arguments(parser: argparse.ArgumentParser, *, batch_size: int | None = 8) -> None:
    """``--device``, ``--batch-size`` (``None``: the method's recipe), ``--workers``, ``--no-progress``."""
    group = parser.add_argument_group("execution")
    group.add_argument("--device", default="auto", help="'auto' (CUDA when present, else CPU), 'cpu' or 'cuda[:N]'")
    group.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N",
                       help="images per batch" + (" (default: the method's recipe, 8 for dapo)" if batch_size is None
                                                  else ""))
    group.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                       help="image decoding processes (0: in the main process)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return value


# ----------------------------------------------------------------------------- checks


def resolve_device_argument(device: str) -> torch.device:
    """``--device`` as a torch device (:func:`dapo.util.precision.resolve_device`)."""
    from dapo.util.precision import DeviceUnavailableError, resolve_device

    with argument_errors("--device", DeviceUnavailableError):
        return resolve_device(device)


def prepare_out(path: str | os.PathLike, argument: str = "--out") -> Path:
    """Create the output folder and prove it writable (a file is created and removed in it)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"{argument} {out}: the output folder cannot be written ({reason})") from error
    return out


# ----------------------------------------------------------------------------- model


def backbone_choice(args: argparse.Namespace, saved: dict | None) -> tuple[str, str | None, int]:
    """Model name, weights tag (``None``: random) and input size: the arguments given, else the
    checkpoint's (``saved``, when its model is the one used), else the compact synthetic backbone
    (``openai`` weights and the paper's 518 px for any other model)."""
    own = saved is not None and args.backbone in (None, saved["model_name"])
    name = args.backbone or (saved["model_name"] if saved is not None else COMPACT_BACKBONE)
    if args.pretrained is not None:
        pretrained = args.pretrained
    elif own:
        pretrained = saved.get("pretrained")
    else:
        pretrained = COMPACT_PRETRAINED if name == COMPACT_BACKBONE else "openai"
    if args.image_size is not None:
        size = args.image_size
    elif own:
        size = int(saved["image_size"])
    else:
        size = COMPACT_IMAGE_SIZE if name == COMPACT_BACKBONE else PAPER_IMAGE_SIZE
    if pretrained is not None and str(pretrained).lower() == NO_WEIGHTS:
        pretrained = None
    return name, pretrained, size


def load_backbone_arguments(args: argparse.Namespace, device: torch.device, saved: dict | None = None):
    """The frozen backbone the arguments (or the checkpoint's metadata ``saved``) describe."""
    from dapo.clip.backbone import load_backbone

    name, pretrained, size = backbone_choice(args, saved)
    if args.clip_weights is not None and not Path(args.clip_weights).is_file():
        raise UsageError(f"--clip-weights {args.clip_weights}: no such file")
    if pretrained is None:
        warnings.warn(f"backbone {name} with random weights (--pretrained {NO_WEIGHTS}): predictions are "
                      f"meaningless except for tests", stacklevel=2)
        torch.manual_seed(0)  # the same random weights in every run
    with argument_errors(f"backbone {name} / {pretrained}", ValueError, FileNotFoundError, RuntimeError):
        return load_backbone(name, pretrained, image_size=size, device=str(device), checkpoint=args.clip_weights)


def checkpoint_path(value: str | None) -> Path:
    """``--checkpoint`` as a path; the default names how to obtain it when it is missing."""
    if value is None:
        if not DEFAULT_CHECKPOINT.is_file():
            raise UsageError(f"--checkpoint: the default checkpoint {DEFAULT_CHECKPOINT} does not exist (`make "
                             f"reproduce` writes it, `dapo train` trains one); pass --checkpoint PATH")
        return DEFAULT_CHECKPOINT
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"--checkpoint {path}: no such file")
    return path


def add_method_argument(parser: argparse.ArgumentParser) -> None:
    """``--method``: a training-free method to run without a checkpoint, or the method a checkpoint must hold."""
    from dapo.methods import available

    parser.add_argument("--method", metavar="NAME",
                        help="a training-free method (winclip, clip_ac, ...) runs without --checkpoint; with "
                             "--checkpoint, the method the checkpoint must hold (one of "
                             f"{', '.join(available())}) (default: the checkpoint's)")


def load_model(args: argparse.Namespace, device: torch.device):
    """The model of ``--checkpoint`` on the backbone it was trained on (or the one given), or the
    training-free ``--method`` on the backbone of the arguments: ``(model, metadata, source)``."""
    from dapo.engine.checkpoint import CheckpointError, load_trained, read_metadata, same_backbone_weights
    from dapo.methods import config_for, get, make_model

    method = getattr(args, "method", None)
    if method is not None:
        with argument_errors("--method", ValueError):
            spec = get(method)
        if args.checkpoint is None:
            if not spec.training_free:
                raise UsageError(f"--method {method} is trained: pass its --checkpoint (train one with "
                                 f"`dapo train --method {method} --out DIR`)")
            backbone = load_backbone_arguments(args, device)
            model = make_model(method, backbone)
            return model.to(device).eval(), {"config": model.config, "vocabulary": None}, f"{method} (training-free)"
    path = checkpoint_path(args.checkpoint)
    with argument_errors(f"--checkpoint {path}", CheckpointError, OSError):
        meta = read_metadata(path)
    if method is not None and meta["config"].name != config_for(method).name:
        raise UsageError(f"--checkpoint {path} holds {meta['config'].name!r}, not --method {method} "
                         f"({config_for(method).name!r})")
    backbone = load_backbone_arguments(args, device, meta["backbone"])
    with argument_errors("--checkpoint", CheckpointError):
        if not same_backbone_weights(path, backbone):
            raise CheckpointError(f"{path} was trained on other weights of {backbone.model_name} (sha256 "
                                  f"{meta['backbone'].get('weights_sha256')}) than {backbone.weights}")
        model = load_trained(path, backbone)
    return model.to(device).eval(), meta, path
