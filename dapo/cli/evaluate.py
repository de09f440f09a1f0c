"""``dapo evaluate``: the binary and multi-type tables of notebook 03 for one checkpoint and one dataset.

Binary detection and segmentation per product (:func:`dapo.experiments.runs.evaluate_binary`: image
and pixel AUROC / AP / F1-max, AUPRO), multi-type segmentation per product and per defect type
(:func:`dapo.experiments.runs.evaluate_multitype`, :func:`dapo.experiments.tables.per_product` /
:func:`~dapo.experiments.tables.per_defect`), each as CSV + Markdown through :func:`dapo.experiments.reporting.save_table`.
A folder dataset without ``masks/`` gets the image-level columns only.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import pandas as pd

from dapo.cli.common import (
    DEFAULT_CHECKPOINT,
    HelpFormatter,
    add_backbone_arguments,
    add_method_argument,
    add_run_arguments,
    load_model,
    prepare_out,
    resolve_device_argument,
)
from dapo.cli.datasets import DATASET_HELP, add_dataset_arguments, open_dataset_arguments
from dapo.util.paths import shown_path

PROFILE = "cli"
DESCRIPTION = f"""\
Evaluate a trained checkpoint on one dataset, product by product, as notebook 03 does.

Writes to --out, as CSV (full precision) and Markdown (%, rounded):
  binary_<dataset>       per product and mean: image AUROC / AP / F1-max, pixel AUROC / AP /
                         F1-max, AUPRO (both definitions)
  multitype_<dataset>    per product and mean: multi-type pixel AUROC / AP / F1, macro over
                         normal + the product's defect types (Table 1 / Tables 12-14 protocol)
  per_defect_<dataset>   per defect type (mean over the products that have it); * marks types
                         absent from the checkpoint's training vocabulary
A folder dataset without masks/ gets the image-level binary columns only.

{DATASET_HELP}"""
EPILOG = """\
examples:
  dapo evaluate --checkpoint runs/my_parts/epoch_005.safetensors --dataset folder --root held_out/ --out eval/
  dapo evaluate --dataset visa --root /data/VisA_20220922 --checkpoint runs/mvtec/epoch_005.safetensors \\
      --clip-weights /models/open_clip_ViT-L-14-336_openai.safetensors --out eval/visa
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("evaluate", help="binary and multi-type metric tables of a checkpoint on a dataset",
                                   description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", metavar="PATH", help=f"trained checkpoint (.safetensors) (default: the "
                        f"synthetic-profile DAPO checkpoint, {shown_path(DEFAULT_CHECKPOINT)} in the repository)")
    add_dataset_arguments(parser, split_default="test")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the tables")
    add_method_argument(parser)
    add_backbone_arguments(parser, from_checkpoint=True)
    add_run_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def _percent(table: pd.DataFrame) -> pd.DataFrame:
    return table * 100.0


def seen_in_training(defects, training_vocabulary) -> dict[str, bool]:
    """Whether each defect name was a training word of the checkpoint (names compared normalised)."""
    from dapo.clip.vocabulary import normalise_name

    trained = {normalise_name(word) for word in training_vocabulary or ()}
    return {name: normalise_name(name) in trained for name in defects}


def run(args: argparse.Namespace) -> int:
    """Evaluate; under ``torchrun --nproc_per_node N`` every rank predicts its share of the images
    (:mod:`dapo.engine.distributed`) and rank 0 alone prints and writes the (one-process) tables."""
    from dapo.engine import distributed
    device = resolve_device_argument(args.device)
    with distributed.process_group(device) as world:
        if world.main:
            return _evaluate(args, distributed.rank_device(device, world), world)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank 0 reports them once
            return _evaluate(args, distributed.rank_device(device, world), world)


def _evaluate(args: argparse.Namespace, device, world) -> int:
    from dapo.experiments.reporting import Provenance
    from dapo.experiments.reporting import save_table as save
    from dapo.experiments.runs import evaluate_binary, evaluate_multitype
    from dapo.experiments.tables import per_defect, per_product, pm_view
    from dapo.metrics import MaskWarning, MetricUndefinedWarning
    from dapo.metrics.binary import IMAGE_METRICS

    def save_table(*table_args, **kwargs):
        return save(*table_args, **kwargs) if world.main else None

    def say(text: str) -> None:
        if world.main:
            print(text, file=sys.stderr)

    out = prepare_out(args.out)
    model, meta, checkpoint = load_model(args, device)
    backbone = model.backbone
    dataset = open_dataset_arguments(args, backbone)
    with_masks = getattr(dataset, "has_masks", True)
    ranks = f", {world.size} processes" if world.size > 1 else ""
    say(f"dapo evaluate: {model.config.name} from {checkpoint} on {args.dataset} {args.root} ({len(dataset)} "
        f"images, {len(dataset.products)} product(s)), {backbone.model_name}/{backbone.pretrained} at "
        f"{backbone.image_size} px, {device}{ranks}")
    prov = Provenance.create(PROFILE, model.config.seed, backbone.model_name, backbone.pretrained)
    common = dict(device=str(device), batch_size=args.batch_size, num_workers=args.workers,
                  progress=not args.no_progress)
    written = []
    with warnings.catch_warnings():
        if not with_masks:  # the pixel metrics of empty masks are undefined: not computed, not reported
            warnings.filterwarnings("ignore", message=r".*pixel.*", category=MetricUndefinedWarning)
            warnings.filterwarnings("ignore", category=MaskWarning)  # defect images have no masks: stated once
        binary = _percent(evaluate_binary(model, dataset, **common))
    if not with_masks:
        binary = binary[list(IMAGE_METRICS)]
    label = f"{model.config.name} ({getattr(checkpoint, 'name', checkpoint)}) on {args.dataset} {args.root}"
    written.append(save_table(binary, f"binary_{args.dataset}", out, prov,
                              f"Binary detection and segmentation (%), {label}"))
    if with_masks:
        result = evaluate_multitype(model, dataset, **common)
        method = {model.config.name: [result]}
        products = per_product(method)
        written.append(save_table(products, f"multitype_{args.dataset}", out, prov,
                                  f"Multi-type segmentation per product (%), {label}", markdown=pm_view(products)))
        defects = per_defect(method, seen_in_training(result.per_defect.index, meta.get("vocabulary")))
        written.append(save_table(defects, f"per_defect_{args.dataset}", out, prov,
                                  f"Multi-type segmentation per defect type (%), {label}; * = not among the "
                                  f"checkpoint's training words", markdown=pm_view(defects)))
    mean = binary.loc["mean"] if "mean" in binary.index else binary.iloc[-1]
    say("dapo evaluate: mean " + ", ".join(f"{k} {v:.1f}" for k, v in mean.items()))
    say("dapo evaluate: wrote " + ", ".join(str(p) for p in written) + " (and .md)")
    return 0
