"""What each method costs: trainable parameters, training time per batch, inference time per image
and peak memory, measured in one run on one machine (issue 33, item 6; notebook 14).

The papers' cost tables (FAPrompt appendix C.1 Table 3, ViP²-CLIP Table 3, in
:mod:`dapo.reference`) were measured on GPUs (an RTX 3090, an L20); a CPU here cannot give their
milliseconds, but it can give the *ratios* to AnomalyCLIP, the one method both papers measure.
:func:`paper_layout` sets the measured values and ratios beside the papers'.

What is measured, per method (:func:`measure_method`), on a batch of ``batch_size`` random images
(seeded; labels half normal, half anomalous with a square defect):

* ``parameters``: the numel of ``learnable_parameters()`` (:func:`count_trainable`), the tensors
  training updates and a checkpoint stores; the frozen backbone is not counted;
* ``train_ms_per_batch``: one :func:`dapo.engine.train.training_step` (forward in the run's
  precision, ``loss_terms``, backward, the method recipe's Adam step), median over ``repeats``
  after ``warmup`` steps, and ``*_pm`` its standard deviation; none for a training-free method;
* ``inference_ms_per_image``: a :class:`~dapo.engine.inference.Predictor` call on the batch (its
  text side encoded once beforehand, as the predictor does), divided by the batch size; median and std;
* memory: on CUDA ``torch.cuda.max_memory_allocated`` over the training steps (``train_peak_gb``)
  and over the inference calls (``inference_peak_gb``), everything allocated included (backbone
  weights too), and the part added above what was allocated before (``*_added_gb``); on a Linux CPU
  the process's peak resident set size (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` before each phase), so libraries and the Python heap are included and
  the ``added`` part is the peak above the resident size just before the phase. Freed memory that
  the C allocator keeps is not returned, so on the CPU each method is measured in a fresh process
  (:func:`measure_methods` with ``isolate=True``, the default), where the peak is that method's own.
  Elsewhere memory is NaN.

Timings are wall-clock (``time.perf_counter``; on CUDA around ``torch.cuda.synchronize``) and
depend on whatever else the machine runs: the ratios, not the milliseconds, are what compares.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from dapo.clip.backbone import frozen_memos_off

#: The method both papers' cost tables measure: the denominator of every ratio.
REFERENCE_METHOD = "anomalyclip"
#: The paper configuration of the parameter counts (FAPrompt appendix B.1, ViP²-CLIP Sec. 5.1).
PAPER_BACKBONE = {"model_name": "ViT-L-14-336", "pretrained": None, "image_size": 518}
FAPROMPT_TABLE = "FAPrompt Table 3"
VIP2_TABLE = "ViP²-CLIP Table 3"
#: Batch size of the papers' timings (FAPrompt appendix C.1: "set to eight for fair comparison").
BATCH_SIZE = 8
GB = 1024 ** 3

#: Measured columns (in :func:`measure_method`'s record) and their units.
MEASURED = {"parameters": "count", "train_ms_per_batch": "ms", "train_ms_per_batch_pm": "ms",
            "inference_ms_per_image": "ms", "inference_ms_per_image_pm": "ms", "train_peak_gb": "GB",
            "train_added_gb": "GB", "inference_peak_gb": "GB", "inference_added_gb": "GB"}


# ----------------------------------------------------------------------------- which methods


def main_methods(names: Iterable[str] | None = None) -> list[str]:
    """The registered methods minus their variants, in registry order.

    A preset named ``<method>_<variant>`` of a registered ``<method>`` (``dapo_naive``,
    ``dapo_official``, ``multiads_f``, ``multiads_paraphrased``, ``vip2clip_release``) builds the
    same model class with other settings: an ablation, a release-faithful twin or an inference
    variant, whose costs are its method's up to a switch. They are measured when named explicitly.
    """
    from dapo.methods import METHODS

    names = list(METHODS) if names is None else list(names)
    return [n for n in names if not any(n.startswith(other + "_") for other in names if other != n)]


def label_of(method: str) -> str:
    """The method's display name (its configuration's ``name``), else the registry name."""
    from dapo.methods import get

    return get(method).config().name or method


def name_key(name: str) -> str:
    """Names compared across papers and registry: case-folded, ``²`` as 2, letters and digits only
    (``APRIL-GAN`` = ``AprilGAN`` = ``aprilgan``, ``ViP²-CLIP`` = ``vip2clip``)."""
    return re.sub(r"[^0-9a-z]", "", name.replace("²", "2").casefold())


# ----------------------------------------------------------------------------- counting


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters: ``learnable_parameters()`` of a method, else the parameters with
    ``requires_grad`` (each shared tensor once)."""
    params = model.learnable_parameters() if hasattr(model, "learnable_parameters") else dict(
        (n, p) for n, p in model.named_parameters() if p.requires_grad)
    return int(sum(p.numel() for p in params.values()))


def parameter_counts(backbone, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Trainable parameters of every method built on ``backbone`` (construction only, no forward):
    columns method, label, training_free, parameters. ``methods`` default: :func:`main_methods`."""
    from dapo.methods import get, make_model

    rows = []
    for name in main_methods() if methods is None else methods:
        spec = get(name)  # ValueError naming the known methods
        model = make_model(name, backbone)
        rows.append({"method": name, "label": label_of(name), "training_free": spec.training_free,
                     "parameters": count_trainable(model)})
        del model
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Setup:
    """How to measure: batch size, repeats after warm-up, device, precision, seed of the batch."""

    batch_size: int = BATCH_SIZE
    repeats: int = 10
    warmup: int = 2
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("batch_size", "repeats"):
            if getattr(self, key) < 1:
                raise ValueError(f"Setup.{key} must be >= 1, got {getattr(self, key)}")
        if self.warmup < 0:
            raise ValueError(f"Setup.warmup must be >= 0, got {self.warmup}")


def synthetic_batch(image_size: int, setup: Setup, product: str) -> dict:
    """A collated batch of random images: even indices normal, odd ones with a square defect of
    class 1 (the methods' costs do not depend on the pixel values)."""
    generator = torch.Generator().manual_seed(setup.seed)
    b = setup.batch_size
    images = torch.randn(b, 3, image_size, image_size, generator=generator)
    labels = torch.tensor([i % 2 for i in range(b)])
    masks = torch.zeros(b, image_size, image_size, dtype=torch.long)
    side = max(1, image_size // 4)
    masks[1::2, side:2 * side, side:2 * side] = 1
    return {"image": images, "label": labels, "type_mask": masks, "product": [product] * b}


def _rss_peak_supported() -> bool:
    return sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)


def _status_kb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) * 1024
    return float("nan")


class _Memory:
    """Peak memory of one phase: CUDA allocator statistics, or the process's peak RSS on Linux."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.kind = ("cuda max_memory_allocated" if self.cuda else
                     "peak RSS of the process (VmHWM)" if _rss_peak_supported() else "not measured")

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif _rss_peak_supported():
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.before = _status_kb("VmRSS")
        else:
            self.before = float("nan")

    def stop(self) -> tuple[float, float]:
        """(peak, peak - level at start) in GB."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif _rss_peak_supported():
            peak = _status_kb("VmHWM")
        else:
            return float("nan"), float("nan")
        return peak / GB, (peak - self.before) / GB


def _timed(fn: Callable[[], object], setup: Setup, device: torch.device) -> list[float]:
    """Milliseconds of ``fn`` over ``setup.repeats`` calls after ``setup.warmup`` untimed ones."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(setup.warmup):
        fn()
    times = []
    for _ in range(setup.repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


@frozen_memos_off()  # every timed call runs the towers: no memo serves a repeated batch
def measure_method(method: str, backbone, vocabulary: Sequence[str], product: str, setup: Setup = Setup()) -> dict:
    """One method's record (the columns of :data:`MEASURED` plus method, label, training_free,
    recipe_epochs and what was measured how) in this process, on ``backbone``'s device."""
    from dapo.engine.inference import Predictor
    from dapo.engine.train import make_optimizer, training_step
    from dapo.methods import get, make_model, training_for

    spec = get(method)
    device = torch.device(setup.device)
    model = make_model(method, backbone).to(device)
    recipe = training_for(method)
    batch = synthetic_batch(backbone.image_size, setup, product)
    memory = _Memory(device)
    record = {"method": method, "label": label_of(method), "training_free": spec.training_free,
              "parameters": count_trainable(model), "recipe_epochs": recipe.epochs}
    record.update(dict.fromkeys([k for k in MEASURED if k != "parameters"], float("nan")))
    torch.manual_seed(setup.seed)
    if model.trainable:
        model.train()
        optimizer = make_optimizer(list(model.learnable_parameters().values()), recipe)
        memory.start()
        times = _timed(lambda: training_step(model, optimizer, batch, tuple(vocabulary), setup.precision),
                       setup, device)
        record["train_peak_gb"], record["train_added_gb"] = memory.stop()
        record["train_ms_per_batch"], record["train_ms_per_batch_pm"] = statistics.median(times), _spread(times)
        del optimizer
    predictor = Predictor(model, tuple(vocabulary), product=product, precision=setup.precision)
    images = batch["image"].to(device)
    memory.start()
    times = [t / setup.batch_size for t in _timed(lambda: predictor(images), setup, device)]
    record["inference_peak_gb"], record["inference_added_gb"] = memory.stop()
    record["inference_ms_per_image"], record["inference_ms_per_image_pm"] = statistics.median(times), _spread(times)
    record.update(memory=memory.kind, **_context(backbone, setup))
    return record


def _context(backbone, setup: Setup) -> dict:
    device = torch.device(setup.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    return {"device": where, "backbone": backbone.describe().get("model_name", ""),
            "image_size": backbone.image_size, "batch_size": setup.batch_size, "repeats": setup.repeats,
            "precision": setup.precision}


def measure_methods(methods: Sequence[str], backbone_spec: dict, vocabulary: Sequence[str], product: str,
                    setup: Setup = Setup(), *, isolate: bool = True, backbone=None,
                    progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every method's record, one row each, all on one machine in one run.

    ``backbone_spec``: ``load_backbone`` arguments (``model_name``, ``pretrained``, ``image_size``,
    optional ``checkpoint``). ``isolate``: each method in a fresh Python process (``python -m
    dapo.experiments.efficiency``), so that CPU peak memory is the method's own; otherwise in this
    process on ``backbone`` (loaded from the spec when not given).
    """
    from dapo.methods import get

    for method in methods:
        get(method)  # an unknown name stops here, before any measurement
    rows = []
    for method in methods:
        if progress:
            progress(method)
        if isolate:
            rows.append(_measure_in_child(method, backbone_spec, vocabulary, product, setup))
        else:
            backbone = backbone if backbone is not None else load_spec(backbone_spec, setup.device)
            rows.append(measure_method(method, backbone, vocabulary, product, setup))
    return pd.DataFrame(rows)


def load_spec(spec: dict, device: str):
    from dapo.clip.backbone import load_backbone

    return load_backbone(spec["model_name"], spec.get("pretrained"), image_size=spec["image_size"],
                         device=device, checkpoint=spec.get("checkpoint"))


def _measure_in_child(method: str, spec: dict, vocabulary: Sequence[str], product: str, setup: Setup) -> dict:
    from dapo.util.paths import REPO_ROOT

    job = {"method": method, "backbone": spec, "vocabulary": list(vocabulary), "product": product,
           "setup": asdict(setup)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "dapo.experiments.efficiency"], input=json.dumps(job),
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {method!r} in a child process failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    """Child process of :func:`measure_methods`: a job as JSON on stdin, the record as JSON on the last line."""
    job = json.loads(sys.stdin.read())
    setup = Setup(**job["setup"])
    backbone = load_spec(job["backbone"], setup.device)
    record = measure_method(job["method"], backbone, job["vocabulary"], job["product"], setup)
    print(json.dumps(record))
    return 0


# ----------------------------------------------------------------------------- tables


def with_ratios(measured: pd.DataFrame, reference: str = REFERENCE_METHOD,
                columns: Sequence[str] = ("parameters", "train_ms_per_batch", "inference_ms_per_image",
                                          "train_peak_gb")) -> pd.DataFrame:
    """``measured`` (one row per method) with ``<column>_ratio`` = value / the reference method's
    value (NaN where either is missing or the reference's is 0)."""
    if reference not in set(measured["method"]):
        raise ValueError(f"ratios need the reference method {reference!r} among the measured ones "
                         f"{list(measured['method'])}")
    out = measured.copy()
    base = measured.set_index("method").loc[reference]
    for column in columns:
        denominator = base[column]
        out[f"{column}_ratio"] = out[column] / denominator if pd.notna(denominator) and denominator != 0 \
            else float("nan")
    return out


#: Each paper table's columns: (heading, paper metric, measured column, scale of the measured value).
LAYOUTS: dict[str, tuple[tuple[str, str, str, float], ...]] = {
    FAPROMPT_TABLE: (("Number of Para.", "parameters", "parameters", 1.0),
                     ("Training Time (ms / batch of 8)", "train_ms_per_batch", "train_ms_per_batch", 1.0),
                     ("Inference Time (ms / image)", "inference_ms_per_image", "inference_ms_per_image", 1.0)),
    VIP2_TABLE: (("Training Time (h; measured: ms/batch × epochs)", "train_hours", "train_ms_x_epochs", 1.0),
                 ("Inference Time (ms)", "inference_ms_per_image", "inference_ms_per_image", 1.0),
                 ("GPU Cost (GB)", "gpu_memory_gb", "train_peak_gb", 1.0),
                 ("Trainable Parameters (M)", "parameters_m", "parameters", 1e-6)),
}
SIDES = ("measured", "measured ratio", "paper", "paper ratio")


def paper_layout(measured: pd.DataFrame, table: str, paper: pd.DataFrame | None = None,
                 reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """``table``'s layout (FAPrompt or ViP²-CLIP Table 3): one row per method, the paper's rows in
    printed order then the measured methods it lacks; per column the measured value, its ratio to
    ``reference``, the paper's value and the paper's ratio to its AnomalyCLIP row.

    ``measured``: one row per method (``method``, ``label`` and the :data:`MEASURED` columns,
    ``recipe_epochs`` for ViP²-CLIP's training hours, which are compared as per-batch time x the
    recipe's epochs: the same data and batch size make the ratio of the totals that product's).
    ``paper``: the tidy reported numbers (default: :func:`dapo.reference.paper_numbers` of ``table``).
    Methods are matched by :func:`name_key` of the registry name or the label.
    """
    from dapo.reference import PAPER_LABEL, paper_numbers

    if table not in LAYOUTS:
        raise ValueError(f"unknown cost table {table!r}; known: {list(LAYOUTS)}")
    paper = paper_numbers(table) if paper is None else paper
    measured = measured.copy()
    if "recipe_epochs" in measured:
        measured["train_ms_x_epochs"] = measured["train_ms_per_batch"] * measured["recipe_epochs"]
    printed = list(dict.fromkeys(paper["method"]))
    by_key = {name_key(m): m for m in printed}
    row_of = {}
    for record in measured.itertuples(index=False):
        row_of[record.method] = by_key.get(name_key(record.method)) or by_key.get(name_key(record.label)) \
            or record.label
    rows = printed + [row_of[m] for m in measured["method"] if row_of[m] not in printed]
    reference_row = row_of.get(reference)
    paper_reference = by_key.get(name_key(reference))
    out = pd.DataFrame(index=pd.Index(rows, name="method"))
    measured_by_row = measured.assign(row=measured["method"].map(row_of)).set_index("row")
    for heading, metric, column, scale in LAYOUTS[table]:
        values = paper[paper["metric"] == metric].set_index("method")["value"]
        ours = measured_by_row[column] * scale if column in measured_by_row else pd.Series(dtype=float)
        out[(heading, "measured")] = ours.reindex(rows)
        out[(heading, "measured ratio")] = ours.reindex(rows) / _value(ours, reference_row)
        out[(heading, "paper")] = values.reindex(rows)
        out[(heading, "paper ratio")] = values.reindex(rows) / _value(values, paper_reference)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    out.attrs["label"] = f"measured beside {PAPER_LABEL}"
    out.attrs["table"] = table
    out.attrs["methods"] = {row: method for method, row in row_of.items()}
    out.attrs["caption"] = (f"{table} layout: measured here beside the paper's ({PAPER_LABEL}); ratios to "
                            f"{reference_row or reference} (measured) and to the paper's {paper_reference} row")
    return out


def _value(series: pd.Series, key: str | None) -> float:
    """The entry of ``key`` when it is a positive number, else NaN (a ratio to it is then NaN)."""
    if key is None or key not in series.index:
        return float("nan")
    value = series.loc[key]
    return float(value) if pd.notna(value) and value > 0 else float("nan")


def parameter_check(counts: pd.DataFrame) -> pd.DataFrame:
    """Counts at the paper configuration beside both papers' reported counts: columns method,
    label, parameters, FAPrompt Table 3, ViP²-CLIP Table 3 (the latter in units, from its
    millions) and the ratio of our count to each."""
    from dapo.reference import paper_numbers

    fa = paper_numbers(FAPROMPT_TABLE, metric="parameters").set_index("method")["value"]
    vip = paper_numbers(VIP2_TABLE, metric="parameters_m").set_index("method")["value"] * 1e6
    out = counts[["method", "label", "parameters"]].copy()
    for table, reported in ((FAPROMPT_TABLE, fa), (VIP2_TABLE, vip)):
        keys = {name_key(m): v for m, v in reported.items()}
        out[table] = [keys.get(name_key(m), keys.get(name_key(lab), float("nan")))
                      for m, lab in zip(out["method"], out["label"])]
        out[f"ratio to {table}"] = out["parameters"] / out[table].where(out[table] > 0)
    return out


def _fmt(value, pattern: str) -> str:
    return "" if pd.isna(value) else format(value, pattern)


def measured_view(measured: pd.DataFrame) -> pd.DataFrame:
    """The measured records as text: medians ± std, memory in GB, ratios to AnomalyCLIP (x)."""
    data = with_ratios(measured)
    out = pd.DataFrame(index=pd.Index(data["label"], name="method"))
    out["parameters"] = [_fmt(v, ",.0f") for v in data["parameters"]]
    for column, heading in (("train_ms_per_batch", "train ms / batch"), ("inference_ms_per_image", "inference ms / image")):
        out[heading] = [f"{_fmt(m, '.1f')} ± {_fmt(s, '.1f')}" if pd.notna(m) else ""
                        for m, s in zip(data[column], data[f"{column}_pm"])]
    for column, heading in (("train_peak_gb", "train peak GB"), ("train_added_gb", "train added GB"),
                            ("inference_peak_gb", "inference peak GB")):
        out[heading] = [_fmt(v, ".3f") for v in data[column]]
    for column, heading in (("parameters", "params"), ("train_ms_per_batch", "train"),
                            ("inference_ms_per_image", "inference"), ("train_peak_gb", "train memory")):
        out[f"{heading} ×AnomalyCLIP"] = [_fmt(v, ".2f") for v in data[f"{column}_ratio"]]
    return out


def layout_view(layout: pd.DataFrame) -> pd.DataFrame:
    """A :func:`paper_layout` frame as text: counts without decimals, ratios with 2, the rest with 2 significant
    decimals (as the papers print them)."""
    out = pd.DataFrame(index=layout.index)
    for heading, side in layout.columns:
        pattern = (".2f" if "ratio" in side else ",.0f" if heading == "Number of Para." else
                   ".4f" if "(M)" in heading and side == "measured" else ".2f")
        out[(heading, side)] = [_fmt(v, pattern) for v in layout[(heading, side)]]
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def parameter_view(check: pd.DataFrame) -> pd.DataFrame:
    """:func:`parameter_check` as text: counts with thousands separators, ratios with 3 decimals."""
    out = pd.DataFrame({"method": check["label"], "parameters": [_fmt(v, ",.0f") for v in check["parameters"]]})
    for table in (FAPROMPT_TABLE, VIP2_TABLE):
        out[table] = [_fmt(v, ",.0f") for v in check[table]]
        out[f"ratio to {table}"] = [_fmt(v, ".3f") for v in check[f"ratio to {table}"]]
    return out.set_index("method")


# ----------------------------------------------------------------------------- figure and sentences


def ratio_figure(layouts: dict[str, pd.DataFrame], title: str = ""):
    """Bars of the ratios to AnomalyCLIP, measured beside the papers', one panel per column of each
    layout (:func:`paper_layout`), each bar from 1 (AnomalyCLIP, dashed) up or down to the ratio on a
    log axis (ratios of 0, training-free methods, and missing values have no bar)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    grid = [(table, list(dict.fromkeys(layout.columns.get_level_values(0)))) for table, layout in layouts.items()]
    width = max(len(headings) for _, headings in grid)
    fig, axes = plt.subplots(len(grid), width, figsize=(3.6 * width, 4.2 * len(grid)), squeeze=False)
    for r, (table, headings) in enumerate(grid):
        layout = layouts[table]
        for ax in axes[r][len(headings):]:
            ax.set_visible(False)
        for ax, heading in zip(axes[r], headings):
            ours, theirs = layout[(heading, "measured ratio")], layout[(heading, "paper ratio")]
            x = np.arange(len(layout))
            for shift, ratios, name in ((-0.2, ours, "measured here"), (0.2, theirs, "paper (reported)")):
                values = ratios.to_numpy(dtype=float, copy=True)
                values[~(values > 0)] = np.nan  # 0 and missing: no bar on the log axis
                ax.bar(x + shift, values - 1.0, 0.4, bottom=1.0, label=name)  # from 1 up or down to the ratio
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xticks(x, layout.index, rotation=60, ha="right", fontsize=8)
            ax.set_title(f"{table}\n{heading}", fontsize=9)
            ax.set_ylabel("ratio to AnomalyCLIP")
    fig.canvas.draw()  # autoscaled limits: within one decade the minor ticks carry the labels
    for ax in axes.flat:
        low, high = ax.get_ylim()
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _, few=high < 10 * low: f"{v:.2g}" if few else ""))
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ratio_lines(layout: pd.DataFrame, measured: pd.DataFrame, reference: str = REFERENCE_METHOD,
                decimals: int = 2) -> list[str]:
    """One sentence per column of a :func:`paper_layout` frame: each method's measured ratio to the
    reference beside the paper's, and for how many of the methods both measure the two ratios lie on
    the same side of 1. For a timed column a ratio counts only when the difference of the medians
    is clear against the repetitions' spread (:func:`dapo.experiments.verdicts.classify` without a
    minimum effect: > 2 std); with one repetition it is not judged. Counts and memory have no spread:
    the side of 1 is read as it is."""
    from dapo.experiments.verdicts import CLEAR, ONE_SEED, classify

    rows = measured.set_index("method")
    methods = layout.attrs["methods"]  # layout row -> measured method
    columns = {heading: column for heading, _, column, _ in LAYOUTS[layout.attrs["table"]]}
    lines = []
    for heading in dict.fromkeys(layout.columns.get_level_values(0)):
        column, parts, same, told, unjudged = columns[heading], [], 0, 0, 0
        timed = f"{column}_pm" in rows.columns
        for row, values in layout.iterrows():
            ours, theirs = values[(heading, "measured ratio")], values[(heading, "paper ratio")]
            if pd.isna(ours):
                continue
            parts.append(f"{row} {ours:.{decimals}f}" + (f" (paper {theirs:.{decimals}f})" if pd.notna(theirs) else ""))
            method = methods.get(row)
            if pd.isna(theirs) or method in (None, reference):
                continue
            counts = True
            if timed:
                diff = rows.loc[method, column] - rows.loc[reference, column]
                std = (rows.loc[method, f"{column}_pm"] ** 2 + rows.loc[reference, f"{column}_pm"] ** 2) ** 0.5
                verdict = classify(diff, std, min_effect=0.0)
                if verdict == ONE_SEED:
                    unjudged += 1
                    continue
                counts = verdict == CLEAR
            told += 1
            same += bool(counts and ours != 1.0 and (ours > 1) == (theirs > 1))
        if not parts:
            continue
        how = "clearly (> 2 std of the repetitions) " if timed else ""
        verdict = f"; {how}on the same side of 1 as the paper for {same} of the {told} other methods both measure" \
            if told else ""
        if unjudged:
            verdict += f"; {unjudged} not judged (one repetition)"
        lines.append(f"{heading}, ratio to {rows.loc[reference, 'label']}: {', '.join(parts)}{verdict}")
    return lines


def parameter_lines(check: pd.DataFrame) -> list[str]:
    """Sentences from :func:`parameter_check`: our count at the paper configuration beside each
    paper's, and the ratio."""
    lines = []
    for _, row in check.iterrows():
        reported = [(table, row[table]) for table in (FAPROMPT_TABLE, VIP2_TABLE)]
        said = [f"{table}: {value:,.0f} (ratio {row['parameters'] / value:.3f})" for table, value in reported
                if pd.notna(value) and value > 0]
        said += [f"{table}: 0" for table, value in reported if pd.notna(value) and value == 0]
        lines.append(f"{row['label']}: {int(row['parameters']):,} trainable parameters"
                     + (f"; {'; '.join(said)}" if said else "; no paper count"))
    return lines


if __name__ == "__main__":
    sys.exit(main())
