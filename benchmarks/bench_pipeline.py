"""How close the training and evaluation pipelines come to the bare model's rate (issue 32, item 4).

For each method, four rates in images per second, measured in one process on one machine:

* ``train bare``: ``training_step`` repeated on one batch already in memory (the model alone);
* ``train epoch``: one epoch of :func:`dapo.engine.train.train` over the profile's training world (:func:`dapo.experiments.runs.training_data`)
  (data loading, augmentation, collation, the steps and the epoch's checkpoint);
* ``eval bare``: a :class:`~dapo.engine.inference.Predictor` call repeated on one batch in memory;
* ``eval pipeline``: :func:`dapo.experiments.runs.evaluate_binary` over the synthetic target world
  (loading, prediction product by product, every binary metric).

and the ratios pipeline / bare (the goal: at least 0.7). Examples::

    python benchmarks/bench_pipeline.py                        # dapo and multiads, default sizes
    python benchmarks/bench_pipeline.py --smoke --methods dapo winclip aprilgan

The numbers are timings of this machine on synthetic data; on a CPU shared with other jobs they
move with its load (printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

TARGET = "synthetic_target"


def median_rate(step, images: int, repeats: int) -> float:
    """Images per second of ``step()`` (one warm-up call, then the median of ``repeats`` calls)."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def measure(method: str, cfg, backbone, batch_size: int, repeats: int) -> dict:
    from dapo.clip.backbone import frozen_memos_off

    with frozen_memos_off():  # the bare and the pipeline rates both run the towers on every batch
        return _measure(method, cfg, backbone, batch_size, repeats)


def _measure(method: str, cfg, backbone, batch_size: int, repeats: int) -> dict:
    from dapo.data import collate_samples
    from dapo.engine.inference import Predictor
    from dapo.engine.train import make_optimizer, train, training_step, training_vocabulary
    from dapo.experiments.runs import evaluate_binary, open_profile_dataset, training_data
    from dapo.methods import get, make_model, preset

    row = {"method": method}
    target = open_profile_dataset(cfg, TARGET, split="test")
    batch = collate_samples([target[i] for i in range(min(batch_size, len(target)))])
    images = len(batch["image"])
    if not get(method).training_free:
        chosen = preset(method)
        recipe = chosen.training.with_overrides(epochs=1, precision="fp32")
        source = training_data(cfg, chosen)
        vocabulary = training_vocabulary(source)
        model = make_model(method, backbone)
        optimizer = make_optimizer(list(model.learnable_parameters().values()), recipe)
        train_batch = collate_samples([source[i] for i in range(min(recipe.batch_size, len(source)))])
        row["train bare"] = median_rate(lambda: training_step(model, optimizer, train_batch, vocabulary, "fp32"),
                                        len(train_batch["image"]), repeats)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            train(make_model(method, backbone), source, folder, recipe, device="cpu", progress=False)
            row["train epoch"] = len(source) / (time.perf_counter() - start)
        row["train ratio"] = row["train epoch"] / row["train bare"]
    model = make_model(method, backbone).eval()
    product = target.products[0]
    predictor = Predictor(model, target.vocabulary(product), product=product, precision="fp32")
    row["eval bare"] = median_rate(lambda: predictor(batch["image"]), images, repeats)
    start = time.perf_counter()
    evaluate_binary(model, target, device="cpu", precision="fp32", batch_size=batch_size, progress=False)
    row["eval pipeline"] = len(target) / (time.perf_counter() - start)
    row["eval ratio"] = row["eval pipeline"] / row["eval bare"]
    return row


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    from dapo.clip.backbone import load_backbone
    from dapo.experiments.profiles import resolve_profile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["dapo", "multiads"], metavar="NAME")
    parser.add_argument("--smoke", action="store_true", help="the smoke-size worlds")
    parser.add_argument("--data-root", default=None, help="where the synthetic worlds are (generated on first use)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = resolve_profile("synthetic", smoke=args.smoke, data_root=args.data_root)
    backbone = load_backbone(cfg.backbone, cfg.pretrained, image_size=cfg.image_size, device="cpu")
    rows = [measure(method, cfg, backbone, args.batch_size, args.repeats) for method in args.methods]
    print(f"CPU {platform.processor() or platform.machine()}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f}, fp32, "
          f"{'smoke' if args.smoke else 'default'}-size synthetic worlds (images/s; ratio = pipeline / bare)")
    print(pd.DataFrame(rows).set_index("method").round(2).to_string())


if __name__ == "__main__":
    main()
