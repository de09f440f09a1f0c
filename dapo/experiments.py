"""The few calls the notebooks make: start a run, prepare data, train or load a method, evaluate it.

``start_notebook("03_multitype", globals())`` validates the notebook's papermill parameters
(:mod:`dapo.parameters`), resolves and checks the profile, makes sure its datasets exist (the
synthetic worlds are generated on first use, so every notebook runs alone from a fresh clone)
and returns a :class:`Run` whose ``table``/``figure`` methods save stamped outputs.

:func:`train_or_load` is the one way any notebook obtains a trained method: it loads the
checkpoint of exactly the requested epoch when the run folder holds one *of the same
configuration* (model config, training recipe, vocabulary, backbone weights), trains or resumes
otherwise, and refuses a folder that holds another configuration. Checkpoint folders are named
by method, setting and seed (``checkpoints/dapo/lam=8/seed1``), so sweeps never share one.
Evaluation runs product by product (MultiADS/DAPO protocol).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from dapo.paths import figures_dir as default_figures_dir
from dapo.paths import results_dir
from dapo.precision import resolve_device, resolve_precision, set_run_precision
from dapo.profiles import ProfileConfig, resolve_profile
from dapo.progress import tqdm
from dapo.reporting import Provenance, save_figure, save_table, write_provenance

DEFAULT_SETTING = "default"


@dataclass
class Run:
    """One notebook's run: its profile, parameters, provenance and output folders.

    Nothing is written until the first table or figure is saved (then ``provenance.json`` too),
    so a run that stops in its checks leaves ``results/`` as it was.
    """

    cfg: ProfileConfig
    prov: Provenance
    seed: int
    device: torch.device
    precision: str
    out_dir: Path
    fig_dir: Path
    notebook: str = "api"
    params: dict = field(default_factory=dict)
    _recorded: bool = False

    def _record(self) -> None:
        if not self._recorded:
            write_provenance(self.out_dir, self.prov, self.notebook, run=self.cfg.describe())
            self._recorded = True

    def table(self, df, name: str, caption: str = "", **kwargs) -> Path:
        """Save a table as CSV + Markdown under the run's results folder."""
        self._record()
        return save_table(df, name, self.out_dir, self.prov, caption, **kwargs)

    def figure(self, fig, name: str) -> Path:
        """Save a figure as PNG (with the provenance footer) under the run's figures folder."""
        self._record()
        return save_figure(fig, name, self.fig_dir, self.prov)

    @property
    def epochs(self) -> int | None:
        return self.cfg.epochs

    def __repr__(self) -> str:
        return (f"Run({self.prov.label}\n    notebook={self.notebook}, seed={self.seed}, device={self.device}, "
                f"precision={self.precision}, backbone={self.cfg.backbone}/{self.cfg.pretrained} @ "
                f"{self.cfg.image_size}px, train={self.cfg.train_dataset}, targets={list(self.cfg.target_datasets)}"
                f"\n    results -> {shown_path(self.out_dir)}\n    figures -> {shown_path(self.fig_dir)})")


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine paths in executed notebooks)."""
    from dapo.paths import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return f".../{Path(path).name}"


def start_run(profile: str = "synthetic", *, smoke: bool = False, seed: int = 0, data_root=None,
              dataset_roots: dict | None = None, backbone: str | None = None, pretrained: str | None = None,
              checkpoint: str | None = None, device: str = "auto", precision: str = "auto",
              epochs: int | None = None, output_dir=None, figures_dir=None, train_dataset: str | None = None,
              target_datasets: Sequence[str] | None = None, notebook: str = "api", prepare: bool = True,
              params: dict | None = None) -> Run:
    """Validate the parameters, resolve and check the profile (a 'paper' run with missing data or
    weights stops here with one message listing what to provide), make sure the datasets exist
    (``prepare``) and seed everything. From here on ``precision="auto"`` means the run's precision
    (:func:`dapo.precision.set_run_precision`). Writes nothing under ``results/`` yet."""
    from dapo.parameters import validate

    values = validate("", dict(profile=profile, smoke=smoke, seed=seed, data_root=data_root,
                               dataset_roots=dataset_roots, backbone=backbone, pretrained=pretrained,
                               checkpoint=checkpoint, device=device, precision=precision, epochs=epochs,
                               output_dir=output_dir, figures_dir=figures_dir, train_dataset=train_dataset,
                               target_datasets=target_datasets))
    cfg = resolve_profile(profile, smoke=smoke, data_root=data_root, dataset_roots=dataset_roots,
                          backbone=backbone, pretrained=pretrained, checkpoint=checkpoint, epochs=epochs,
                          train_dataset=train_dataset, target_datasets=target_datasets)
    dev = resolve_device(device)
    set_run_precision(None)  # a new run: "auto" is the machine's choice again, not the last run's
    resolved_precision = resolve_precision(precision, dev)
    set_run_precision(resolved_precision)
    torch.manual_seed(seed)
    prov = Provenance.create(profile, seed, cfg.backbone, cfg.pretrained, smoke, resolved_precision)
    out_dir = Path(output_dir) if output_dir else results_dir(profile, smoke)
    fig_dir = Path(figures_dir) if figures_dir else default_figures_dir(profile, smoke)
    if prepare:
        prepare_data(cfg, seed=seed)
    return Run(cfg, prov, seed, dev, resolved_precision, out_dir, fig_dir, notebook, {**values, **(params or {})})


def start_notebook(notebook: str, namespace: MutableMapping[str, Any]) -> Run:
    """:func:`start_run` for a notebook: its parameters are read from ``namespace`` (``globals()``),
    checked against the notebook's definition in :mod:`dapo.parameters` and written back checked
    (a list that ``papermill -p`` passed as text becomes the list the later cells use)."""
    import pandas as pd

    from dapo.parameters import COMMON, from_namespace

    values = from_namespace(notebook, namespace)
    namespace.update(values)
    common = {p.name: values[p.name] for p in COMMON}
    warnings.filterwarnings("ignore", message=".*initialized randomly.*")
    pd.set_option("display.precision", 1)
    from dapo.plots import notebook_display

    notebook_display()
    return start_run(**common, notebook=notebook, params=values)


def prepare_data(cfg: ProfileConfig, seed: int = 0) -> dict:
    """Make sure every dataset of the profile is on disk (the synthetic worlds are generated once)."""
    if cfg.profile == "synthetic":
        from dapo.synthetic.worlds import ensure_worlds

        ensure_worlds(cfg.dataset_roots, smoke=cfg.smoke, seed=seed)
    return {name: Path(root) for name, root in cfg.dataset_roots.items()}


def profile_normalisation(cfg: ProfileConfig) -> dict:
    """The image mean/std the profile's backbone expects (its OpenCLIP tag's; OpenAI's otherwise),
    as :class:`dapo.backbone.Backbone` takes them, without loading the weights."""
    import open_clip

    from dapo.backbone import register_asset_configs

    register_asset_configs()
    tag = {}
    if cfg.pretrained and cfg.backbone in open_clip.list_models():
        tag = open_clip.get_pretrained_cfg(cfg.backbone, cfg.pretrained) or {}
    return {"mean": tag.get("mean"), "std": tag.get("std")}


def open_profile_dataset(cfg: ProfileConfig, name: str, **kwargs):
    """Open one dataset of the profile at the profile's input size and normalisation."""
    from dapo.data import open_dataset

    return open_dataset(name, cfg.dataset_roots[name], image_size=cfg.image_size,
                        **{**profile_normalisation(cfg), **kwargs})


def load_profile_backbone(cfg: ProfileConfig, device: torch.device | str = "auto"):
    """The profile's frozen backbone; ``pretrained="random"`` gives random weights (for dry runs)."""
    from dapo.backbone import load_backbone

    pretrained = None if cfg.pretrained == "random" else cfg.pretrained
    return load_backbone(cfg.backbone, pretrained, image_size=cfg.image_size, device=str(resolve_device(device)),
                         checkpoint=cfg.checkpoint)


# ----------------------------------------------------------------------------- checkpoints


MAX_SETTING_NAME = 96


def setting_name(overrides: Mapping[str, Any]) -> str:
    """Folder name of a setting: ``default``, or ``key=value`` pairs sorted by key (``lam=8,n_ctx=2``);
    a name longer than 96 characters keeps its start and ends in a hash of the whole setting."""
    if not overrides:
        return DEFAULT_SETTING
    parts = []
    for key in sorted(overrides):
        value = overrides[key]
        text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{key}={re.sub(r'[^A-Za-z0-9._-]+', '_', text)}")
    name = ",".join(parts)
    if len(name) <= MAX_SETTING_NAME:
        return name
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(dict(overrides), sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{name[:MAX_SETTING_NAME - 18]}~{digest}"


def non_default(method: str, setting: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``setting`` that differ from the method's preset (the checkpoint folder's name)."""
    from dapo.baselines import preset

    if "seed" in setting:
        raise ValueError("'seed' is not a setting: pass seed=... (or seeds=[...] to a sweep)")
    preset(method, **setting)  # unknown fields and invalid values raise here, naming them
    recipe = preset(method)
    defaults = {**recipe.training.to_dict(), **recipe.model.to_dict()}
    return {key: value for key, value in setting.items() if _normalised(defaults[key]) != _normalised(value)}


def _normalised(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def checkpoint_dir(run_dir: str | Path, method: str, seed: int = 0, overrides: Mapping[str, Any] | None = None) -> Path:
    """``run_dir/checkpoints/<method>/<setting>/seed<k>``: one folder per trained configuration."""
    return Path(run_dir) / "checkpoints" / method / setting_name(overrides or {}) / f"seed{seed}"


def _training_data(cfg: ProfileConfig, preset):
    """The profile's training dataset opened for a recipe (multi-defect images per the recipe)."""
    dataset = open_profile_dataset(cfg, cfg.train_dataset, split="test", vocab_scope="dataset",
                                   exclude_multi_defect=preset.training.multi_defect == "exclude")
    if preset.training.mosaic_prob > 0:
        from dapo.data.augment import MosaicDataset

        dataset = MosaicDataset(dataset, preset.training.mosaic_prob, seed=preset.training.seed)
    return dataset


def train_or_load(cfg: ProfileConfig, method: str, run_dir: str | Path, *, seed: int = 0,
                  epochs: int | None = None, backbone=None, device: str = "auto", precision: str = "auto",
                  retrain: bool = False, progress: bool = True, **overrides):
    """A trained ``method`` (a name from :mod:`dapo.baselines`) and its loss history (``None`` for
    training-free methods).

    ``overrides`` change fields of the method's model config or training recipe (a sweep's
    setting). ``epochs`` defaults to the profile's, else the recipe's. The checkpoint of exactly
    that epoch is loaded when :func:`checkpoint_dir` holds one trained with the same model config,
    recipe, vocabulary and backbone weights; a folder trained on other backbone weights is
    retrained; a folder holding another configuration raises ``ValueError`` (pass
    ``retrain=True`` to replace it). Otherwise training starts, or resumes from the last epoch.
    """
    from dapo.baselines import make_model
    from dapo.baselines import preset as make_preset
    from dapo.checkpoint import epoch_path, read_metadata, same_backbone_weights
    from dapo.train import ResumeError, check_same_run, load_history, load_trained, train, training_vocabulary

    dev = resolve_device(device)
    backbone = backbone or load_profile_backbone(cfg, dev)
    overrides = non_default(method, overrides)
    recipe = make_preset(method, seed=seed, **overrides)
    epochs = epochs or cfg.epochs or recipe.training.epochs
    training = recipe.training.with_overrides(epochs=epochs, precision=precision)
    model = make_model(method, backbone, seed=seed, **_model_overrides(overrides))
    if not model.learnable_parameters():
        return model.to(dev), None  # training-free baseline (e.g. CLIP-AC)
    folder = checkpoint_dir(run_dir, method, seed, overrides)
    dataset = _training_data(cfg, recipe)
    vocabulary = training_words(training_vocabulary(dataset), cfg.train_dataset, recipe.training)
    target = epoch_path(folder, epochs)
    if target.is_file() and not retrain:
        if not same_backbone_weights(target, backbone):
            print(f"{folder} was trained on other backbone weights than {backbone.weights}: retraining")
            retrain = True
        else:
            check_same_run(read_metadata(target), model, vocabulary, training, folder)
            return load_trained(target, backbone).to(dev), load_history(folder, epochs)
    try:
        result = train(model, dataset, folder, training, device=str(dev), resume=not retrain, progress=progress,
                       vocabulary=vocabulary)
    except ResumeError as error:
        print(f"{error}\n-> training {method} afresh in {folder}")
        result = train(model, dataset, folder, training, device=str(dev), resume=False, progress=progress,
                       vocabulary=vocabulary)
    return model, result.history


def _model_overrides(overrides: Mapping[str, Any]) -> dict:
    from dapo.config import split_overrides

    return split_overrides(dict(overrides))[0]


def training_words(vocabulary: tuple[str, ...], dataset_name: str, training) -> tuple[str, ...]:
    """The words training prompts use for the dataset's defect types (``training.train_words``)."""
    if training.train_words == "knowledge_base":
        return vocabulary
    from dapo.data.training_words import official_training_words

    return official_training_words(dataset_name, vocabulary)


def train_methods(cfg: ProfileConfig, methods: Mapping[str, str], run_dir: str | Path, *, seeds: Sequence[int],
                  backbone=None, device: str = "auto", precision: str = "auto", epochs: int | None = None,
                  progress: bool = True) -> dict[tuple[str, int], tuple]:
    """``{(label, seed): (model, history)}`` for ``methods`` (label -> method name) and every seed."""
    backbone = backbone or load_profile_backbone(cfg, device)
    return {(label, seed): train_or_load(cfg, method, run_dir, seed=seed, epochs=epochs, backbone=backbone,
                                         device=device, precision=precision, progress=progress)
            for label, method in methods.items() for seed in seeds}


# ----------------------------------------------------------------------------- evaluation


def predict_products(model, dataset, *, device: str = "auto", precision: str = "auto", batch_size: int = 8,
                     num_workers: int = 0, vocabulary: str = "product", desc: str = "predict", progress: bool = True):
    """Yield ``(product, vocabulary, batch, prediction)`` product by product, each product scored
    against its own defect types (``vocabulary="product"``) or the dataset's (``"dataset"``);
    text embeddings are computed once per product; ``precision`` as :class:`dapo.inference.Predictor`."""
    from dapo.data import collate_samples
    from dapo.inference import Predictor

    dev = resolve_device(device)
    model = model.to(dev).eval()
    for product in tqdm(dataset.products, desc=desc, disable=not progress):
        words = dataset.vocabulary(product) if vocabulary == "product" else dataset.dataset_vocabulary
        predictor = Predictor(model, words, product=product, precision=precision)
        loader = DataLoader(dataset.subset(product), batch_size=batch_size, num_workers=num_workers,
                            collate_fn=collate_samples)
        for batch in loader:
            with torch.no_grad():
                yield product, words, batch, predictor(batch["image"].to(dev))


def evaluate_multitype(model, dataset, *, desc: str = "multi-type", **kwargs):
    """Zero-shot multi-type segmentation of every product over normal + its own defect types
    (the protocol of both official codes, whatever the method's binary vocabulary)."""
    from dapo.metrics import MultiTypeEvaluator

    evaluator = MultiTypeEvaluator()
    for product, vocabulary, batch, pred in predict_products(model, dataset, desc=desc, vocabulary="product",
                                                             **kwargs):
        evaluator.add(product, ("normal", *vocabulary), pred["type_probs"].float().cpu(), batch["type_mask"])
    return evaluator.compute()


def binary_evaluator(model, dataset, *, desc: str = "binary", **kwargs):
    """The filled :class:`~dapo.metrics.BinaryEvaluator` of every product (its ``compute``,
    ``roc_curve`` and ``rates_at``); the defect vocabulary per product follows
    ``model.config.inference_vocabulary``."""
    from dapo.metrics import BinaryEvaluator

    evaluator = BinaryEvaluator()
    for _, _, batch, pred in predict_products(model, dataset, desc=desc,
                                              vocabulary=model.config.inference_vocabulary, **kwargs):
        evaluator.add(batch["product"], pred["image_score"].float().cpu(), batch["label"],
                      pred["anomaly_map"].float().cpu(), batch["mask"])
    return evaluator


def evaluate_binary(model, dataset, *, desc: str = "binary", **kwargs):
    """Binary detection and segmentation of every product (image and pixel metrics): product x
    metric, plus a ``mean`` row."""
    return binary_evaluator(model, dataset, desc=desc, **kwargs).compute()


#: Thresholds of the TPR/FPR curves (DAPO Fig. 10); 0.5 (Fig. 4's confusion matrices) is one of them.
CURVE_THRESHOLDS = tuple(i / 100 for i in range(101))


@dataclass
class BinaryEvaluation:
    """One binary evaluation, small enough to keep for every method, seed and dataset.

    table: product x metric with a ``mean`` row (:meth:`BinaryEvaluator.compute`).
    roc: image-level ROC points per product and pooled over products (``product == "pooled"``).
    rates: image-level confusion counts, TPR and FPR at :data:`CURVE_THRESHOLDS` (``score >= t``),
        per product and pooled.
    """

    table: Any
    roc: Any
    rates: Any


def evaluate_binary_curves(model, dataset, *, thresholds: Sequence[float] = CURVE_THRESHOLDS,
                           desc: str = "binary", **kwargs) -> BinaryEvaluation:
    """:func:`evaluate_binary` plus the image-level ROC points and the rates at ``thresholds``
    (DAPO Fig. 4 and Fig. 10), computed from the same streaming evaluator."""
    evaluator = binary_evaluator(model, dataset, desc=desc, **kwargs)
    return BinaryEvaluation(evaluator.compute(), evaluator.roc_curve("image", pooled=True),
                            evaluator.rates_at(list(thresholds), "image", pooled=True))


def multilabel_evaluator(model, dataset, *, desc: str = "multi-label", **kwargs):
    """The filled :class:`~dapo.metrics.MultiLabelEvaluator` (Eq. 11, Table 11): per product, the
    image-level ``P(D_k)`` (``Prediction.defect_probs``) of the product's own defect types against
    the defect types each image shows (``batch["defects"]``; normal images have none)."""
    from dapo.metrics import MultiLabelEvaluator

    evaluator = MultiLabelEvaluator()
    for product, vocabulary, batch, pred in predict_products(model, dataset, desc=desc, vocabulary="product",
                                                             **kwargs):
        evaluator.add(product, vocabulary, pred["defect_probs"].float().cpu(), [tuple(d) for d in batch["defects"]])
    return evaluator


#: DAPOConfig fields read only at inference (:mod:`dapo.inference`, the runners); training never reads them.
INFERENCE_FIELDS = ("name", "inference_vocabulary", "global_score", "image_score_global_weight", "map_score",
                    "smoothing_sigma")


def inference_variant(model, method: str):
    """A trained ``model`` scored as the preset ``method``, which must differ from the model's own
    configuration only in :data:`INFERENCE_FIELDS` (MultiADS-F: MultiADS's trained model scoring
    each product's own defect types with its own image score, as ``test_prior_knowledge.py`` loads
    the MultiADS checkpoint). The variant shares the model's parameters; nothing is trained."""
    import copy

    from dapo.baselines import config_for

    wanted = config_for(method, seed=model.config.seed)
    own, other = model.config.to_dict(), wanted.to_dict()
    differences = sorted(k for k in own if own[k] != other[k] and k not in INFERENCE_FIELDS)
    if differences:
        raise ValueError(f"{model.config.name} and {method} differ in trained settings {differences}: "
                         f"train {method} itself (train_or_load)")
    variant = copy.copy(model)  # shares parameters, sub-modules and the text caches
    variant.config = model.config.with_overrides(**{k: other[k] for k in INFERENCE_FIELDS})
    return variant


def add_inference_variants(trained: Mapping[tuple[str, int], tuple], variants: Mapping[str, tuple[str, str]]
                           ) -> dict[tuple[str, int], tuple]:
    """:func:`train_methods`'s output with ``variants`` (``{label: (trained label, method)}``, e.g.
    ``{"MultiADS-F": ("MultiADS", "multiads_f")}``) added after their trained method, per seed,
    as :func:`inference_variant` (same loss history)."""
    labels = list(dict.fromkeys(label for label, _ in trained))
    for label, (base, _) in variants.items():
        if base not in labels:
            raise ValueError(f"variant {label!r} needs {base!r}, which was not trained (trained: {labels})")
        labels.insert(labels.index(base) + 1, label)
    seeds = list(dict.fromkeys(seed for _, seed in trained))
    result = {}
    for label in labels:
        for seed in seeds:
            if label in variants:
                base, method = variants[label]
                model, history = trained[base, seed]
                result[label, seed] = (inference_variant(model, method), history)
            elif (label, seed) in trained:
                result[label, seed] = trained[label, seed]
    return result


def evaluate_methods(trained: Mapping[tuple[str, int], tuple], datasets: Mapping[str, Any], evaluate, *,
                     device: str = "auto", progress: bool = True, **kwargs) -> dict[str, dict[str, list]]:
    """``{dataset: {label: [evaluate(model, dataset) per seed]}}`` for :func:`train_methods`'s output.

    A training-free method (no loss history) is the same model under every seed: it is
    evaluated once, so its tables show one value and no spread.
    """
    results: dict[str, dict[str, list]] = {name: {} for name in datasets}
    for (label, seed), (model, history) in trained.items():
        for name, dataset in datasets.items():
            per_seed = results[name].setdefault(label, [])
            if history is None and per_seed:
                continue
            per_seed.append(evaluate(model, dataset, device=device, progress=progress,
                                     desc=f"{label} seed {seed} on {name}", **kwargs))
    return results
