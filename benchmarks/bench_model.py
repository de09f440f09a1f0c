"""Speed of a DAPO-style model against its own FLOP count: training step and inference, fp32 and bf16.

Each phase's FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (attention
included: the CPU flash-attention kernels, which the counter does not know, get the counter's
own SDPA formulas), and a GEMM of the model's own MLP shape (tokens x width @ width x 4 width)
is timed in fp32 and bf16 in the same run, interleaved with the phases. The ratio
``time / (FLOPs / bf16 GEMM rate)`` says how far a phase is from its FLOP time at the rate
this machine reaches on the model's largest matmul: 1 would be pure GEMM at that rate.

Examples::

    python benchmarks/bench_model.py                      # compact ViT, 128 px, batch 8, K = 8 (CPU)
    python benchmarks/bench_model.py --compare            # also the pre-fusion block path (before/after)
    python benchmarks/bench_model.py --paper              # ViT-L-14-336, 518 px, batch 8 (CUDA only)

The backbone is randomly initialised (random weights cost what real ones cost) and the inputs
are random tensors. Times are medians over interleaved rounds (every phase, precision and GEMM
once per round), so a change of machine load affects all of them alike; on a shared CPU read
the ratios rather than the milliseconds (or pass ``--threads 1 --clock cpu``: one thread's CPU
time does not count the time other jobs hold the core). Peak memory: on CUDA the peak allocated by PyTorch
during each phase's warm-up; on the CPU the process's peak resident set size so far.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from dapo.clip.backbone import frozen_memos_off, load_backbone
from dapo.engine.inference import Predictor
from dapo.engine.train import training_step
from dapo.methods import METHODS, make_model
from dapo.methods.dapo.losses import loss_terms
from dapo.methods.dapo.model import DAPOOutput
from dapo.methods.dapo.progressive import reference_blocks
from dapo.util.precision import autocast, cpu_has_fast_bf16, resolve_device

DEFECT_NAMES = ("bent", "broken", "color", "contamination", "crack", "cut", "fabric", "faulty imprint", "glue",
                "hole", "liquid", "misplaced", "missing", "poke", "scratch", "squeeze", "thread", "rough")
ATEN = torch.ops.aten


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# CPU attention kernels FlopCounterMode has no formula for (their arguments start like the CUDA ones').
CPU_ATTENTION_FLOPS = {ATEN._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
                       ATEN._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dapo-compact",
                        help="OpenCLIP model name, random weights (default: the compact synthetic-profile ViT)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocabulary-size", type=int, default=8, help="defect types K in training")
    parser.add_argument("--method", default="dapo", choices=sorted(METHODS))
    parser.add_argument("--precisions", default=None,
                        help="comma-separated, of fp32,bf16 (default: both where bf16 is fast, else fp32)")
    parser.add_argument("--compare", action="store_true",
                        help="also time the pre-fusion block path (reference_blocks): before/after in one run")
    parser.add_argument("--steps", type=int, default=7, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="'cpu': this process's CPU time instead of wall time; with --threads 1 it "
                             "stays meaningful on a machine shared with other jobs")
    parser.add_argument("--paper", action="store_true",
                        help="paper setting: ViT-L-14-336 at 518 px, batch 8 (needs CUDA)")
    args = parser.parse_args(argv)
    if args.paper:
        args.model, args.image_size, args.batch = "ViT-L-14-336", 518, 8
    if not 1 <= args.vocabulary_size <= len(DEFECT_NAMES):
        parser.error(f"--vocabulary-size must lie in 1..{len(DEFECT_NAMES)}")
    if args.precisions is not None:
        args.precisions = tuple(p.strip() for p in args.precisions.split(","))
        if not args.precisions or not set(args.precisions) <= {"fp32", "bf16"}:
            parser.error(f"--precisions takes fp32 and/or bf16, got {args.precisions}")
    return args


def default_precisions(device: torch.device) -> tuple[str, ...]:
    return ("fp32", "bf16") if device.type == "cuda" or cpu_has_fast_bf16() else ("fp32",)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes / 1024 if platform.system() != "Darwin" else kilobytes / 2**20


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions and attention)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


def gemm_probe(rows: int, width: int, hidden: int, dtype: torch.dtype, device: torch.device, repeats: int):
    """A timed callable: ``repeats`` GEMMs (rows x width) @ (width x hidden) in ``dtype``; and its FLOPs."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=generator).to(device, dtype)
    w = torch.randn(hidden, width, generator=generator).to(device, dtype)
    b = torch.randn(hidden, generator=generator).to(device, dtype)

    @torch.no_grad()
    def run():
        for _ in range(repeats):
            F.linear(x, w, b)

    return run, 2 * rows * width * hidden * repeats


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


@frozen_memos_off()  # a repeated batch runs the towers every time
def measure(phases: dict, steps: int, warmup: int, device: torch.device,
            clock=time.perf_counter) -> dict[str, tuple[float, float]]:
    """Median seconds per call and peak memory (MB) of each phase, timed in interleaved rounds."""
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
            start = clock()
            fn()
            synchronize(device)
            times[name].append(clock() - start)
    return {name: (statistics.median(times[name]), peaks[name]) for name in phases}


def model_phases(model, batch: dict, vocabulary: tuple[str, ...], precision: str, path: str) -> dict:
    """Callables for inference, a training step, and two parts of a step: the text encoder
    (forward and backward) and the loss terms on the stage maps (forward and backward)."""
    blocks = reference_blocks if path == "reference" else contextlib.nullcontext
    images = batch["image"]
    with blocks():
        predictor = Predictor(model, vocabulary, product="widget", precision=precision)

    def inference():
        with blocks():
            predictor(images)

    phases = {"inference": inference}
    if model.learnable_parameters():
        optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)

        def text_encoder():
            model.train()
            with blocks(), autocast(model.device, precision):
                embeddings = model.encode_text(vocabulary)
            embeddings.float().sum().backward()
            model.zero_grad(set_to_none=True)
            model.eval()

        def train_step():
            model.train()
            with blocks():
                training_step(model, optimizer, batch, vocabulary, precision)
            model.eval()

        with torch.no_grad(), blocks(), autocast(model.device, precision):
            shapes = [logits.shape for logits in model(images, vocabulary).stage_logits]
        generator = torch.Generator().manual_seed(1)
        stage_logits = [torch.randn(shape, generator=generator).to(images.device).requires_grad_() for shape in shapes]
        global_logits = torch.randn(images.shape[0], 2, generator=generator).to(images.device).requires_grad_()

        def loss():
            output = DAPOOutput(global_logits, None, stage_logits, None, None)
            loss_terms(output, batch["label"], batch["type_mask"], lam=model.config.lam)["total"].backward()

        if model.config.learned_prompts:
            phases["text encoder (fwd+bwd)"] = text_encoder
        phases["loss terms (fwd+bwd)"] = loss
        phases["training step"] = train_step
    return phases


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    device = resolve_device(args.device)
    if args.paper and device.type != "cuda":
        sys.exit("--paper needs a CUDA GPU (ViT-L-14-336 at 518 px); run a smaller --model on the CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precisions or default_precisions(device)
    backbone = load_backbone(args.model, None, image_size=args.image_size, device=device)
    model = make_model(args.method, backbone).to(device)
    vocabulary = DEFECT_NAMES[: args.vocabulary_size]
    batch = random_batch(args.batch, args.image_size, len(vocabulary), device)

    paths = ("reference", "fused") if args.compare else ("fused",)
    phases, flops = {}, {}
    for path in paths:
        for precision in precisions:
            for phase, fn in model_phases(model, batch, vocabulary, precision, path).items():
                phases[(phase, precision, path)] = fn
    for (phase, _precision, _path), fn in phases.items():  # FLOPs do not depend on path or precision
        if (phase, "fp32") not in flops:
            fn()  # warm caches (prompt ids) outside the counter
            flops[(phase, "fp32")] = count_flops(fn)
    n_deep = model.vision_deep.n_tokens if model.vision_deep is not None else 0
    rows = args.batch * (backbone.grid_size()[0] * backbone.grid_size()[1] + 1 + n_deep)
    width = backbone.vision_width
    gemm_flops = {}
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        probe, gemm_flops[precision] = gemm_probe(rows, width, 4 * width, dtype, device,
                                                  repeats=10 if device.type == "cpu" else 100)
        phases[("GEMM", precision, "")] = probe
    if args.paper or device.type == "cuda":
        probe, gemm_flops["peak"] = gemm_probe(8192, 8192, 8192, torch.bfloat16, device, repeats=10)
        phases[("GEMM", "peak", "")] = probe

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    timed = measure(phases, args.steps, args.warmup, device, clock)
    rates = {precision: gemm_flops[precision] / timed[("GEMM", precision, "")][0] for precision in gemm_flops}
    reference_rate = rates["bf16"] if "bf16" in rates else rates["fp32"]
    table = []
    for (phase, precision, path), (seconds, peak) in timed.items():
        if phase == "GEMM":
            continue
        n = flops[(phase, "fp32")]
        row = {"phase": phase, "precision": precision, "blocks": path, "ms / batch": 1000 * seconds,
               "ms / image": 1000 * seconds / args.batch, "images / s": args.batch / seconds, "GFLOP": n / 1e9,
               "TFLOP/s": n / seconds / 1e12 if n else None,
               "x FLOP time": seconds / (n / reference_rate) if n else None, "peak memory (MB)": peak}
        if "peak" in rates:
            row["of bf16 peak"] = n / seconds / rates["peak"] if n else None
        table.append(row)
    return table, {"rates": rates, "gemm_shape": (rows, width, 4 * width), "device": device,
                   "precisions": precisions}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table, info = run(args)
    device = info["device"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rows, width, hidden = info["gemm_shape"]
    print(f"{args.method} on {args.model} (random init), {args.image_size} px, batch {args.batch}, "
          f"K = {args.vocabulary_size}, {name}, torch {torch.__version__}")
    rates = ", ".join(f"{precision} {rate / 1e12:.3f}" for precision, rate in info["rates"].items())
    print(f"GEMM ({rows}x{width} @ {width}x{hidden}; 'peak': 8192^3 bf16) TFLOP/s: {rates}")
    reference = "bf16" if "bf16" in info["rates"] else "fp32"
    print(f"x FLOP time = time / (FLOPs / {reference} GEMM rate); medians of {args.steps} interleaved rounds "
          f"({'process CPU' if args.clock == 'cpu' else 'wall'} time)")
    print(tabulate(table, headers="keys", floatfmt=".3g", tablefmt="github", missingval="-"))


if __name__ == "__main__":
    main()
