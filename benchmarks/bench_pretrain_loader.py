"""Benchmark: image-stage pretraining steps with views generated ahead by worker processes
against views generated inline, same steps, same run.

Runs ``--steps`` image-tower steps of the default recipe (:class:`PretrainConfig`, only
``image_steps`` shortened, no text stage, no monitor) once per ``--workers`` setting, after a
short warm-up, and reports seconds per step and the speed-up over ``workers=0`` (the
reference). The trained weights are identical whatever the setting (tested in
``tests/test_synthetic_pretrain.py``); only the wall-clock time differs.

    python benchmarks/bench_pretrain_loader.py                 # 60 steps, workers 0 and 1
    python benchmarks/bench_pretrain_loader.py --steps 20 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from dapo.synthetic.pretrain import PretrainConfig, pretrain


def seconds_per_step(config: PretrainConfig, workers: int) -> float:
    """Wall-clock seconds per image-tower step of a fresh run of ``config``."""
    with tempfile.TemporaryDirectory() as run_dir:
        began = time.perf_counter()
        pretrain(config, run_dir, output=Path(run_dir) / "w.safetensors", resume=False, loader_workers=workers)
        return (time.perf_counter() - began) / config.image_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=PretrainConfig().threads)
    args = parser.parse_args()
    config = replace(PretrainConfig(), image_steps=args.steps, text_steps=0, threads=args.threads,
                     checkpoint_every=10**9)
    seconds_per_step(replace(config, image_steps=3), 0)  # warm-up: imports, allocator, first graphs
    timings = {workers: seconds_per_step(config, workers) for workers in args.workers}
    reference = timings.get(0, next(iter(timings.values())))
    print(f"{args.steps} image-tower steps, {args.threads} torch threads")
    print("| loader workers | s / step | speed-up vs inline |")
    print("| --- | --- | --- |")
    for workers, seconds in timings.items():
        print(f"| {workers} | {seconds:.3f} | {reference / seconds:.2f}x |")


if __name__ == "__main__":
    main()
