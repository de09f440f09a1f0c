"""Speed and memory of a DAPO-style model on one backbone: training images/s, inference ms/image.

The backbone is randomly initialised (random weights cost exactly what real ones cost), the
inputs are random tensors, and the reference row is the frozen CLIP image encoder alone on
the same batch, so the "x CLIP" column reads as the model's overhead in this very run.

Examples::

    python benchmarks/bench_model.py                                 # compact ViT, 128 px, batch 8 (CPU)
    python benchmarks/bench_model.py --model ViT-B-16 --image-size 224 --batch 8
    python benchmarks/bench_model.py --paper                         # ViT-L-14-336, 518 px, batch 8 (CUDA)

Times are medians over interleaved rounds (reference, inference, training, reference, ...).
Peak memory: on CUDA the peak allocated by PyTorch during each phase; on the CPU the process's
peak resident set size so far (warm-up runs the phases in that order, so each figure includes
the earlier ones).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import torch
from tabulate import tabulate

from dapo.backbone import load_backbone
from dapo.baselines import METHODS, make_model
from dapo.inference import Predictor
from dapo.precision import autocast, resolve_device
from dapo.train import training_step

DEFECT_NAMES = ("bent", "broken", "color", "contamination", "crack", "cut", "fabric", "faulty imprint", "glue",
                "hole", "liquid", "misplaced", "missing", "poke", "scratch", "squeeze", "thread", "rough")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dapo-compact",
                        help="OpenCLIP model name, random weights (default: the compact synthetic-profile ViT)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocabulary-size", type=int, default=15, help="defect types K in training")
    parser.add_argument("--method", default="dapo", choices=sorted(METHODS))
    parser.add_argument("--steps", type=int, default=5, help="timed iterations per phase")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--paper", action="store_true",
                        help="paper setting: ViT-L-14-336 at 518 px, batch 8 (needs CUDA)")
    args = parser.parse_args(argv)
    if args.paper:
        args.model, args.image_size, args.batch = "ViT-L-14-336", 518, 8
    if not 1 <= args.vocabulary_size <= len(DEFECT_NAMES):
        parser.error(f"--vocabulary-size must lie in 1..{len(DEFECT_NAMES)}")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes / 1024 if platform.system() != "Darwin" else kilobytes / 2**20


def measure(phases: dict, steps: int, warmup: int, device: torch.device) -> dict[str, tuple[float, float]]:
    """Median seconds per call and peak memory (MB) of each phase.

    Warm-up runs the phases in order and records their peak memory; the timed rounds then
    interleave the phases, so a change in machine load affects all of them alike.
    """
    peaks = {}
    for name, fn in phases.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(max(warmup, 1)):
            fn()
        synchronize(device)
        peaks[name] = peak_memory_mb(device)
    times: dict[str, list[float]] = {name: [] for name in phases}
    for _ in range(steps):
        for name, fn in phases.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), peaks[name]) for name in phases}


def random_batch(batch: int, size: int, n_classes: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    type_mask = torch.zeros(batch, size, size, dtype=torch.int64)
    for i in range(batch):
        if i % 2:
            top, left = (int(v) for v in torch.randint(0, size // 2, (2,), generator=generator))
            type_mask[i, top:top + size // 4, left:left + size // 4] = 1 + i % n_classes
    return {"image": torch.randn(batch, 3, size, size, generator=generator).to(device),
            "type_mask": type_mask.to(device), "label": torch.tensor([i % 2 for i in range(batch)]).to(device),
            "product": ["widget"] * batch}


def run(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    if args.paper and device.type != "cuda":
        sys.exit("--paper needs a CUDA GPU (ViT-L-14-336 at 518 px); run a smaller --model on the CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = load_backbone(args.model, None, image_size=args.image_size, device=device)
    model = make_model(args.method, backbone).to(device)
    vocabulary = DEFECT_NAMES[: args.vocabulary_size]
    batch = random_batch(args.batch, args.image_size, len(vocabulary), device)
    images = batch["image"]

    @torch.no_grad()
    def clip_image_encoder():
        with autocast(device, "auto" if device.type == "cuda" else "fp32"):
            backbone.clip.encode_image(images)

    predictor = Predictor(model, vocabulary, product="widget")
    phases = {"CLIP image encoder (reference)": clip_image_encoder,
              "inference (Predictor, text cached)": lambda: predictor(images)}
    if model.learnable_parameters():
        optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)

        def train_step():
            model.train()
            training_step(model, optimizer, batch, vocabulary)
            model.eval()

        phases[f"training step (K={len(vocabulary)})"] = train_step
    results = measure(phases, args.steps, args.warmup, device)
    reference = results["CLIP image encoder (reference)"][0]
    return [{"phase": name, "ms / image": 1000 * seconds / args.batch, "images / s": args.batch / seconds,
             "x CLIP": seconds / reference, "peak memory (MB)": peak}
            for name, (seconds, peak) in results.items()]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = run(args)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.method} on {args.model} (random init), {args.image_size} px, batch {args.batch}, "
          f"{name}, torch {torch.__version__}")
    print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github"))


if __name__ == "__main__":
    main()
