"""Evaluation throughput against the number of processes (``torchrun``, :mod:`dapo.engine.distributed`).

For each process count N, ``torchrun --standalone --nproc_per_node N`` runs this script's worker:
every process loads the model and the dataset, waits at a barrier, then the clock runs over one
sharded binary evaluation (:func:`dapo.experiments.runs.evaluate_binary`: prediction of the rank's
share, metric accumulation, the reduction of the evaluators onto every rank) until the last rank
is done. Process counts are interleaved over ``--rounds`` rounds and the median is reported with
the speed-up over one process; the metric tables of every run must be identical (checked).

Examples::

    python benchmarks/bench_distributed.py                         # CPU: 1 and 2 processes, 1 thread each
    python benchmarks/bench_distributed.py --processes 1 2 4 --device cuda --precision bf16   # GPUs

Data: the synthetic target world (generated on first use under ``--data-root``; ``--smoke``
for the smoke size: 52 test images, else the default size: 290 test images of 5 products) at
the compact backbone's 128 px, DAPO untrained on the committed compact weights (untrained
prompts cost what trained ones cost). The numbers are synthetic-data timings of this machine;
on a CPU shared with other jobs they move with its load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TARGET = "synthetic_target"


def worker(args: argparse.Namespace) -> None:
    """One process of a torchrun launch: time one sharded evaluation, rank 0 writes the result."""
    from dapo.clip.backbone import load_backbone
    from dapo.engine import distributed
    from dapo.experiments.profiles import resolve_profile
    from dapo.experiments.runs import evaluate_binary, open_profile_dataset
    from dapo.methods import make_model

    torch.set_num_threads(args.threads)
    device = distributed.rank_device(args.device)
    with distributed.process_group(device) as world:
        cfg = resolve_profile("synthetic", smoke=args.smoke, data_root=args.data_root)
        backbone = load_backbone(cfg.backbone, cfg.pretrained, image_size=cfg.image_size, device=str(device))
        model = make_model("dapo", backbone, seed=0)
        dataset = open_profile_dataset(cfg, TARGET, split="test")
        distributed.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        table = evaluate_binary(model, dataset, device=str(device), precision=args.precision,
                                batch_size=args.batch_size, progress=False)
        cpu = distributed.all_gather(time.process_time() - cpu_start)
        distributed.barrier()
        seconds = time.perf_counter() - start
        if world.main:
            Path(args.result).write_text(json.dumps({"seconds": seconds, "cpu": max(cpu), "images": len(dataset),
                                                     "table": table.to_json(double_precision=15)}))


def launch(n: int, args: argparse.Namespace, result: Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               __file__, "--worker", "--result", str(result), "--data-root", str(args.data_root),
               "--device", args.device, "--precision", args.precision, "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), *(["--smoke"] if args.smoke else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{n} process(es) failed:\n{done.stderr[-4000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="the smoke-size world (52 test images)")
    parser.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "dapo_bench_distributed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from dapo.experiments.profiles import resolve_profile
    from dapo.synthetic.worlds import ensure_worlds

    cfg = resolve_profile("synthetic", smoke=args.smoke, data_root=args.data_root, check=False)
    ensure_worlds({TARGET: cfg.dataset_roots[TARGET]}, smoke=args.smoke)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} logical CPUs ({platform.processor() or platform.machine()}), device {args.device}, "
          f"{args.threads} thread(s) per process, {args.precision}, batch {args.batch_size}; load average before: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    times: dict[int, list[float]] = {n: [] for n in args.processes}
    cpu: dict[int, list[float]] = {n: [] for n in args.processes}
    tables = set()
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for n in args.processes:
                result = launch(n, args, Path(folder) / f"{n}-{round_}.json")
                times[n].append(result["seconds"])
                cpu[n].append(result["cpu"])
                tables.add(result["table"])
                images = result["images"]
    base = statistics.median(times[args.processes[0]])
    cpu_base = statistics.median(cpu[args.processes[0]])
    print(f"\nsharded binary evaluation of {images} synthetic test images ({TARGET}, "
          f"{'smoke' if args.smoke else 'default'} size), median of {args.rounds} rounds; cpu: the busiest "
          f"process's CPU seconds (its ratio is the speed-up the split allows on idle cores):")
    print(f"{'processes':>9}  {'seconds':>8}  {'images/s':>8}  {'speed-up':>8}  {'cpu s':>7}  {'cpu ratio':>9}"
          f"  rounds (s)")
    for n in args.processes:
        median, cpu_median = statistics.median(times[n]), statistics.median(cpu[n])
        print(f"{n:>9}  {median:>8.2f}  {images / median:>8.1f}  {base / median:>8.2f}  {cpu_median:>7.2f}  "
              f"{cpu_base / cpu_median:>9.2f}  " + " ".join(f"{t:.2f}" for t in times[n]))
    print(f"metric tables identical across process counts and rounds: {'yes' if len(tables) == 1 else 'NO'}")
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
