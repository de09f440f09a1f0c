"""Pretrain the compact CLIP on the captioned synthetic corpus and write dapo/assets/dapo-compact.safetensors.

    python scripts/pretrain_compact_clip.py                  # the recipe's defaults, seed 0
    python scripts/pretrain_compact_clip.py --image-steps 50 --text-steps 20 --output /tmp/try.safetensors --run-dir /tmp/try

Two stages (after LiT): a supervised image tower, then the text tower trained contrastively
against the image tower, locked but for its last block (:mod:`dapo.synthetic.pretrain`;
``--no-text-tunes-last-block`` locks it all, as LiT does). A run is a pure function of
:class:`dapo.synthetic.pretrain.PretrainConfig` (on one CPU type with the same thread count;
CUDA is used when present and gives a numerically different model). ``--run-dir`` receives
``log.csv`` (losses per step), ``eval.csv`` (held-out accuracy at every checkpoint: of the
supervised heads during the image stage, zero-shot during the text stage) and ``state.pt``;
an interrupted run resumes from it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields

from dapo.synthetic.pretrain import COMPACT_WEIGHTS, PretrainConfig, pretrain
from dapo.synthetic.pretrain_config import HeldoutPretrainConfig
from dapo.synthetic.zeroshot import defect_type_accuracy, head_accuracy, heldout_set, product_accuracy

MONITOR_SEED = 7  # held-out stream of the training monitor (the evaluation script uses seed 1)


def held_out_monitor(per_class: int):
    """Held-out accuracy at each checkpoint: of the supervised heads in the image stage,
    zero-shot in the text stage."""
    items = heldout_set(seed=MONITOR_SEED, per_class=per_class)

    def monitor(model, heads, stage, step):
        if stage == "image":
            return {key: round(value, 4) for key, value in head_accuracy(model, heads, items).items()}
        return {"product_top1": round(product_accuracy(model, items)["accuracy"], 4),
                "defect_type_top1": round(defect_type_accuracy(model, items)["accuracy"], 4)}

    return monitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PretrainConfig()
    for f in fields(PretrainConfig):
        if f.name in ("corpus", "betas"):
            continue
        default = getattr(defaults, f.name)
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(default, bool) else {"type": type(default)}
        parser.add_argument(f"--{f.name.replace('_', '-')}", default=default, **kind)
    parser.add_argument("--output", default=str(COMPACT_WEIGHTS))
    parser.add_argument("--run-dir", default="runs/pretrain_compact")
    parser.add_argument("--fresh", action="store_true", help="ignore a resumable state in --run-dir")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="processes generating image-stage views ahead of training (use 1-2 beside a GPU; "
                             "0, the fastest on 2 CPU cores: inline); no effect on the model")
    parser.add_argument("--monitor-per-class", type=int, default=1,
                        help="held-out images per (product, state) for the monitor (0: no monitor)")
    parser.add_argument("--heldout-target-only", action="store_true",
                        help="keep the target-only defect types out of the supervised image stage "
                             "(HeldoutPretrainConfig); write to another --output")
    args = parser.parse_args()
    config = (HeldoutPretrainConfig if args.heldout_target_only else PretrainConfig)(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)
                               if f.name not in ("corpus", "betas")})
    monitor = held_out_monitor(args.monitor_per_class) if args.monitor_per_class > 0 else None
    began = time.time()
    path = pretrain(config, args.run_dir, output=args.output, resume=not args.fresh, monitor=monitor,
                    loader_workers=args.loader_workers)
    print(f"wrote {path} in {(time.time() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()
