"""Pretrain the compact CLIP on the captioned synthetic corpus and write dapo/assets/dapo-compact.safetensors.

    python scripts/pretrain_compact_clip.py                  # the recipe's defaults, seed 0
    python scripts/pretrain_compact_clip.py --steps 50 --output /tmp/try.safetensors --run-dir /tmp/try

A run is a pure function of :class:`dapo.synthetic.pretrain.PretrainConfig` (on CPU with the
same thread count; CUDA is used when present and gives a numerically different model). The
committed checkpoint is an interim one that these defaults do not reproduce yet (README,
"Status of the committed compact checkpoint"). ``--run-dir`` receives ``log.csv``
(loss per step), ``eval.csv`` (held-out zero-shot accuracy at every checkpoint) and
``state.pt``; an interrupted run resumes from it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields

from dapo.synthetic.pretrain import COMPACT_WEIGHTS, PretrainConfig, pretrain
from dapo.synthetic.zeroshot import defect_type_accuracy, heldout_set, product_accuracy

MONITOR_SEED = 7  # held-out stream of the training monitor (the evaluation script uses seed 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PretrainConfig()
    for f in fields(PretrainConfig):
        if f.name in ("corpus", "betas"):
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name))
    parser.add_argument("--output", default=str(COMPACT_WEIGHTS))
    parser.add_argument("--run-dir", default="runs/pretrain_compact")
    parser.add_argument("--fresh", action="store_true", help="ignore a resumable state in --run-dir")
    parser.add_argument("--monitor-per-class", type=int, default=1,
                        help="held-out images per (product, state) for the monitor (0: no monitor)")
    args = parser.parse_args()
    config = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)
                               if f.name not in ("corpus", "betas")})
    monitor = None
    if args.monitor_per_class > 0:
        items = heldout_set(seed=MONITOR_SEED, per_class=args.monitor_per_class)

        def monitor(model, step):
            return {"defect_type_top1": round(defect_type_accuracy(model, items)["accuracy"], 4),
                    "product_top1": round(product_accuracy(model, items)["accuracy"], 4)}

    began = time.time()
    path = pretrain(config, args.run_dir, output=args.output, resume=not args.fresh, monitor=monitor)
    print(f"wrote {path} in {(time.time() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()
