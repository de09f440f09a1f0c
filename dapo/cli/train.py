"""``dapo train``: train a method (:mod:`dapo.methods`) on one dataset with :func:`dapo.engine.train.train`.

The recipe is the method's preset (``dapo.methods.preset(method)``) with ``--epochs``,
``--precision``, ``--batch-size`` and any DAPOConfig or TrainConfig field (``--set lam=8 n_ctx=4``)
overridden, or a run file (``--config run.yaml``, :mod:`dapo.cli.config`); checkpoints, resume and the
loss CSV are those of :mod:`dapo.engine.train` (``--out`` holds ``epoch_NNN.safetensors``), and ``run.yaml``
beside them holds the resolved run, which ``--config`` repeats.
"""

from __future__ import annotations

import argparse
import functools
import sys

from dapo.cli.common import (
    HelpFormatter,
    UsageError,
    add_backbone_arguments,
    add_run_arguments,
    argument_errors,
    backbone_choice,
    load_backbone_arguments,
    one_line,
    positive_int,
    prepare_out,
    resolve_device_argument,
)
from dapo.cli.datasets import DATASET_HELP, add_dataset_arguments, open_dataset_arguments

DESCRIPTION = f"""\
Train a method's learned prompts and adapters on a dataset (the backbone stays frozen).

Writes to --out one checkpoint per epoch (epoch_NNN.safetensors: learned parameters and the
configuration), loss_history.csv and config.json; an interrupted run resumes from its last
complete epoch when started again with the same arguments. run.yaml in --out records the
resolved run (every option and every model and training field): `dapo train --config
OUT/run.yaml` repeats it, and a run file of one's own may hold any subset. Any field of the
model (DAPOConfig) or the recipe (TrainConfig) can be set with --set FIELD=VALUE. Give the last
checkpoint to `dapo predict --checkpoint` or `dapo evaluate --checkpoint`.

{DATASET_HELP}"""
EPILOG = """\
examples:
  dapo train --dataset folder --root my_parts/ --epochs 5 --out runs/my_parts
  dapo train --dataset folder --root my_parts/ --method dapo --set lam=8 n_ctx=4 lr=5e-4 --out runs/lam8
  dapo train --config runs/lam8/run.yaml --out runs/lam8_again       # the same run, elsewhere
  dapo train --dataset mvtec --root /data/mvtec_ad --backbone ViT-L-14-336 --pretrained openai \\
      --clip-weights /models/open_clip_ViT-L-14-336_openai.safetensors --out runs/mvtec
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from dapo.methods import METHODS

    parser = subparsers.add_parser("train", help="train a method on a dataset (e.g. a folder of one's own images)",
                                   description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    add_dataset_arguments(parser, split_default="test")
    parser.add_argument("--method", default="dapo", choices=sorted(METHODS), metavar="METHOD",
                        help=f"method preset (one of {', '.join(sorted(METHODS))})")
    parser.add_argument("--epochs", type=positive_int, metavar="N",
                        help="training epochs (default: the method's recipe, 5 for dapo)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the data order")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="autocast precision; auto: bf16 on CUDA and bf16-capable CPUs, else fp32")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the checkpoints (and run.yaml): a run of the same configuration there is "
                             "resumed; checkpoints of another one are never overwritten (choose another folder)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                        help="any DAPOConfig or TrainConfig field, e.g. --set lam=8 n_ctx=4 aggregation=attention "
                             "betas='(0.9, 0.999)' (values are Python literals, else text; wins over the options "
                             "above and over --config)")
    parser.add_argument("--config", metavar="FILE",
                        help="a run file (YAML): options and 'model'/'training' fields, e.g. the run.yaml that "
                             "every run writes; the command line's options and --set win over it")
    add_backbone_arguments(parser, from_checkpoint=False)
    add_run_arguments(parser, batch_size=None)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train; under ``torchrun --nproc_per_node N`` the ranks train one model data-parallel with the
    recipe's global batch (:mod:`dapo.engine.distributed`) and rank 0 alone writes and prints."""
    from dapo.engine import distributed
    device = resolve_device_argument(args.device)
    with distributed.process_group(device) as world:
        return _train(args, distributed.rank_device(device, world), world)


def _train(args: argparse.Namespace, device, world) -> int:
    from dapo.cli.config import check_fields, parse_set, resolve, run_document, write_run_file
    from dapo.engine.checkpoint_store import FolderBusyError
    from dapo.engine.train import ResumeError, train, training_vocabulary
    from dapo.experiments.runs import training_words
    from dapo.methods import make_model

    fields = check_fields(parse_set(args.set), "--set", args.method)
    recipe, model_fields, training_fields = resolve(args.method, args.seed, fields)
    training = recipe.training.with_overrides(epochs=args.epochs or recipe.training.epochs, precision=args.precision,
                                              batch_size=args.batch_size or recipe.training.batch_size)
    training = training.with_overrides(**training_fields)
    out = prepare_out(args.out)
    backbone = load_backbone_arguments(args, device)
    model = make_model(args.method, backbone, seed=args.seed, **model_fields)
    if not model.learnable_parameters():
        raise UsageError(f"--method {args.method}: a training-free method (nothing to train); predict with it directly")
    dataset = open_dataset_arguments(args, backbone, vocab_scope="dataset",
                                     exclude_multi_defect=training.multi_defect == "exclude")
    if getattr(dataset, "has_masks", True) is False:
        raise UsageError(f"--root {args.root}: training needs pixel masks, and the folder has no masks/ folder "
                         f"(masks/<defect>/<image name>.png, nonzero = defect)")
    if training.mosaic_prob > 0:
        from dapo.data.augment import MosaicDataset

        dataset = MosaicDataset(dataset, training.mosaic_prob, seed=training.seed)
    vocabulary = training_words(training_vocabulary(dataset), args.dataset, training)
    check_prompts(model, vocabulary, args.root)
    check_resumable(out, model, vocabulary, training)
    if world.main:
        write_run_file(out, run_document(args, model.config, training, backbone_choice(args, None)))
    say = functools.partial(print, file=sys.stderr) if world.main else lambda *a, **k: None
    say(f"dapo train: {args.method} on {args.dataset} {args.root} ({len(dataset)} images, defects: "
          f"{', '.join(vocabulary)}), {backbone.model_name}/{backbone.pretrained} at {backbone.image_size} px, "
          f"{training.epochs} epoch(s), {device}" + (f", {world.size} processes" if world.size > 1 else ""))
    with argument_errors(f"--out {out}", ResumeError, FolderBusyError):
        result = train(model, dataset, out, training, device=str(device),
                       num_workers=args.workers, progress=world.main and not args.no_progress, vocabulary=vocabulary)
    say(f"dapo train: final checkpoint {result.final} (loss history {out / 'loss_history.csv'})")
    return 0


def check_prompts(model, vocabulary, root) -> None:
    """Every defect name's prompt fits the text tower (else a one-line error before training)."""
    import torch

    from dapo.clip.vocabulary import PromptTooLongError

    with argument_errors(f"the defect names of --root {root}", PromptTooLongError), torch.no_grad():
        model.encode_text(vocabulary)


def check_resumable(out, model, vocabulary, training) -> None:
    """The checkpoints already in ``out`` are readable and of this configuration (else one line)."""
    from dapo.engine.checkpoint import CheckpointError, list_checkpoints, read_metadata
    from dapo.engine.train import check_same_run

    completed = [c for c in list_checkpoints(out) if c.epoch <= training.epochs]
    if not completed:
        return
    with argument_errors(f"--out {out}", CheckpointError):
        meta = read_metadata(completed[-1].path)
    try:
        check_same_run(meta, model, vocabulary, training, out)
    except ValueError as error:
        raise UsageError(f"--out: {one_line(error).replace('another folder', 'another folder (--out)')}") from error
