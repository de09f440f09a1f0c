"""The few calls the notebooks make: start a run, prepare data, train or load a method, evaluate it.

``start_notebook("03_multitype", globals())`` validates the notebook's papermill parameters
(:mod:`dapo.experiments.parameters`), resolves and checks the profile, makes sure its datasets exist (the
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

import time
import warnings
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from dapo.engine import distributed, ledger
from dapo.engine.checkpoint_store import DEFAULT_SETTING, checkpoint_dir, setting_name  # noqa: F401 (re-exported)
from dapo.engine.ledger import record_model
from dapo.experiments.profiles import ProfileConfig, resolve_profile
from dapo.experiments.reporting import Provenance, save_figure, save_table, write_provenance
from dapo.util.paths import figures_dir as default_figures_dir
from dapo.util.paths import results_dir, shown_path  # noqa: F401 (shown_path re-exported for notebook 00)
from dapo.util.precision import resolve_device, resolve_precision, set_run_precision
from dapo.util.progress import tqdm


@dataclass
class Run:
    """One notebook's run: its profile, parameters, provenance and output folders.

    Nothing is written until the first table or figure is saved (then ``provenance.json`` too,
    updated at every save), so a run that stops in its checks leaves ``results/`` as it was.
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

    def stamp(self, table=None) -> Provenance:
        """The run's provenance as of now: the seeds of ``table``'s own ``seed`` column, else of
        every model the run used (:mod:`dapo.engine.ledger`), and the precisions they were trained in."""
        import dataclasses

        from dapo.engine import ledger
        seeds = ledger.seeds()
        if table is not None and "seed" in getattr(table, "columns", ()):
            seeds = tuple(sorted({int(s) for s in table["seed"]}))
        return dataclasses.replace(self.prov, seeds=seeds, train_precision="+".join(ledger.training_precisions()))

    def _record(self, prov: Provenance) -> None:
        from dapo.experiments.timings import write_work

        write_provenance(self.out_dir, prov, self.notebook, run=self.cfg.describe())
        write_work(self.out_dir, self.notebook, prov.run_id, ledger.work())

    def table(self, df, name: str, caption: str = "", **kwargs) -> Path:
        """Save a table as CSV + Markdown under the run's results folder."""
        prov = self.stamp(df)
        self._record(prov)
        return save_table(df, name, self.out_dir, prov, caption, **kwargs)

    def figure(self, fig, name: str) -> Path:
        """Save a figure as PNG (with the provenance footer) under the run's figures folder."""
        prov = self.stamp()
        self._record(prov)
        return save_figure(fig, name, self.fig_dir, prov)

    @property
    def epochs(self) -> int | None:
        return self.cfg.epochs

    def __repr__(self) -> str:
        return (f"Run({self.prov.label}\n    notebook={self.notebook}, seed={self.seed}, device={self.device}, "
                f"precision={self.precision}, backbone={self.cfg.backbone}/{self.cfg.pretrained} @ "
                f"{self.cfg.image_size}px, train={self.cfg.train_dataset}, targets={list(self.cfg.target_datasets)}"
                f"\n    results -> {shown_path(self.out_dir)}\n    figures -> {shown_path(self.fig_dir)})")


def start_run(profile: str = "synthetic", *, smoke: bool = False, seed: int = 0, data_root=None,
              dataset_roots: dict | None = None, backbone: str | None = None, pretrained: str | None = None,
              checkpoint: str | None = None, device: str = "auto", precision: str = "auto",
              epochs: int | None = None, output_dir=None, figures_dir=None, train_dataset: str | None = None,
              target_datasets: Sequence[str] | None = None, notebook: str = "api", prepare: bool = True,
              params: dict | None = None) -> Run:
    """Validate the parameters, resolve and check the profile (a 'paper' run with missing data or
    weights stops here with one message listing what to provide), make sure the datasets exist
    (``prepare``) and seed everything. From here on ``precision="auto"`` means the run's precision
    (:func:`dapo.util.precision.set_run_precision`). Writes nothing under ``results/`` yet."""
    from dapo.experiments.parameters import validate

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
    ledger.reset()
    resolved_precision = resolve_precision(precision, dev)
    set_run_precision(resolved_precision)
    torch.manual_seed(seed)
    prov = Provenance.create(profile, seed, cfg.backbone, cfg.pretrained, smoke, resolved_precision)
    out_dir = Path(output_dir) if output_dir else results_dir(profile, smoke)
    fig_dir = Path(figures_dir) if figures_dir else default_figures_dir(profile, smoke)
    if prepare:
        prepare_data(cfg, seed=seed)
    from dapo.experiments.evaluation_cache import set_run_folder

    set_run_folder(out_dir / "cache" / "evaluations")  # evaluate_methods(cache="auto"): one per results folder
    return Run(cfg, prov, seed, dev, resolved_precision, out_dir, fig_dir, notebook, {**values, **(params or {})})


def start_notebook(notebook: str, namespace: MutableMapping[str, Any]) -> Run:
    """:func:`start_run` for a notebook: its parameters are read from ``namespace`` (``globals()``),
    checked against the notebook's definition in :mod:`dapo.experiments.parameters` and written back checked
    (a list that ``papermill -p`` passed as text becomes the list the later cells use)."""
    import pandas as pd

    from dapo.experiments.parameters import COMMON, from_namespace

    values = from_namespace(notebook, namespace)
    namespace.update(values)
    common = {p.name: values[p.name] for p in COMMON}
    warnings.filterwarnings("ignore", message=".*initialized randomly.*")
    pd.set_option("display.precision", 1)
    from dapo.experiments.plots import notebook_display

    notebook_display()
    return start_run(**common, notebook=notebook, params=values)


def prepare_data(cfg: ProfileConfig, seed: int = 0) -> dict:
    """Make sure every dataset of the profile is on disk (the synthetic worlds are generated once;
    other datasets a synthetic run names through ``dataset_roots`` must exist already)."""
    if cfg.profile == "synthetic":
        from dapo.synthetic.worlds import SOURCE_WORLD, TARGET_WORLDS, ensure_worlds

        generated = (SOURCE_WORLD, *TARGET_WORLDS)  # a real dataset given by dataset_roots is only read
        ensure_worlds({k: v for k, v in cfg.dataset_roots.items() if k in generated}, smoke=cfg.smoke, seed=seed)
    return {name: Path(root) for name, root in cfg.dataset_roots.items()}


def profile_normalisation(cfg: ProfileConfig) -> dict:
    """The image mean/std the profile's backbone expects (its OpenCLIP tag's; OpenAI's otherwise),
    as :class:`dapo.clip.backbone.Backbone` takes them, without loading the weights."""
    import open_clip

    from dapo.clip.backbone import register_asset_configs

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
    from dapo.clip.backbone import load_backbone

    pretrained = None if cfg.pretrained == "random" else cfg.pretrained
    return load_backbone(cfg.backbone, pretrained, image_size=cfg.image_size, device=str(resolve_device(device)),
                         checkpoint=cfg.checkpoint)


# ----------------------------------------------------------------------------- checkpoints


def non_default(method: str, setting: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``setting`` that differ from the method's preset (the checkpoint folder's name)."""
    from dapo.methods import preset

    if "seed" in setting:
        raise ValueError("'seed' is not a setting: pass seed=... (or seeds=[...] to a sweep)")
    preset(method, **setting)  # unknown fields and invalid values raise here, naming them
    recipe = preset(method)
    defaults = {**recipe.training.to_dict(), **recipe.model.to_dict()}
    return {key: value for key, value in setting.items() if _normalised(defaults[key]) != _normalised(value)}


def _normalised(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def training_data(cfg: ProfileConfig, preset):
    """The profile's training dataset opened for a recipe (multi-defect images per the recipe)."""
    dataset = open_profile_dataset(cfg, cfg.train_dataset, split="test", vocab_scope="dataset",
                                   exclude_multi_defect=preset.training.multi_defect == "exclude")
    if preset.training.mosaic_prob > 0:
        from dapo.data.augment import MosaicDataset

        dataset = MosaicDataset(dataset, preset.training.mosaic_prob, seed=preset.training.seed)
    return dataset


def train_or_load(cfg: ProfileConfig, method: str, run_dir: str | Path, *, seed: int = 0,
                  epochs: int | None = None, backbone=None, device: str = "auto", precision: str = "auto",
                  progress: bool = True, **overrides):
    """A trained ``method`` (a name from :mod:`dapo.methods`) and its loss history (``None`` for
    training-free methods).

    ``overrides`` change fields of the method's model config or training recipe (a sweep's
    setting). ``epochs`` defaults to the profile's, else the recipe's. The checkpoint of exactly
    that epoch is loaded from whichever folder of the setting and seed holds it
    (:func:`find_checkpoint`), after checking that it was trained with the same model config,
    recipe, vocabulary and backbone weights (``ValueError`` naming the folder otherwise).
    Otherwise the setting's folder for that training length is trained, resumed, or started
    from a shorter training's optimiser state (:mod:`dapo.engine.checkpoint_store`). Nothing already
    written is rewritten, and a second process asking for the same folder waits for the first.
    """
    from dapo.engine.checkpoint import list_checkpoints, load_trained
    from dapo.engine.checkpoint_store import folder_lock
    from dapo.engine.train import load_history, train, training_vocabulary
    from dapo.methods import make_model
    from dapo.methods import preset as make_preset

    dev = resolve_device(device)
    backbone = backbone or load_profile_backbone(cfg, dev)
    overrides = dict(overrides)
    epochs = epochs or overrides.pop("epochs", None)
    overrides = non_default(method, overrides)
    recipe = make_preset(method, seed=seed, **overrides)
    epochs = epochs or cfg.epochs or recipe.training.epochs
    training = recipe.training.with_overrides(epochs=epochs, precision=precision)
    model = make_model(method, backbone, seed=seed, **_model_overrides(method, overrides))
    if not model.learnable_parameters():
        return model.to(dev), None  # training-free baseline (e.g. CLIP-AC)
    dataset = training_data(cfg, recipe)
    vocabulary = training_words(training_vocabulary(dataset), cfg.train_dataset, recipe.training)
    folder = checkpoint_dir(run_dir, method, seed, overrides, None if epochs == standard_epochs(cfg, recipe) else epochs)
    with folder_lock(folder):
        start = time.perf_counter()
        found = find_checkpoint(run_dir, method, seed, overrides, epochs, check=(model, vocabulary, training))
        if found is not None:
            record_model(method, seed, found)
            loaded = load_trained(found, backbone).to(dev), load_history(found.parent, epochs)
            ledger.record_work("training", _work_key(run_dir, found), "loaded", time.perf_counter() - start)
            return loaded
        if not list_checkpoints(folder) and distributed.current().main:
            _start_from_shorter(run_dir, method, seed, overrides, folder, epochs, (model, vocabulary, training))
        distributed.barrier()  # data-parallel ranks resume from what rank 0 copied
        result = train(model, dataset, folder, training, device=str(dev), progress=progress, vocabulary=vocabulary)
    record_model(method, seed, result.final)
    ledger.record_work("training", _work_key(run_dir, result.final), "trained", time.perf_counter() - start)
    return model, result.history


def _work_key(run_dir: str | Path, checkpoint: str | Path) -> str:
    """A checkpoint as :mod:`dapo.engine.ledger` records it: under the name of the run's folder
    (``synthetic/checkpoints/...``; ``trained_on_x/checkpoints/...`` for another training direction)."""
    run_dir = Path(run_dir).resolve()
    return (Path(run_dir.name) / Path(checkpoint).resolve().relative_to(run_dir)).as_posix()


def standard_epochs(cfg: ProfileConfig, recipe) -> int:
    """The training length whose folder carries no ``epochs=`` in its name: the profile's own (2 on
    the synthetic profile, 1 at smoke size, the recipe's on the paper profile), whatever epochs a
    run asks for (``-p epochs 5`` trains into ``epochs=5``; the headline folders stay as they are)."""
    return resolve_profile(cfg.profile, smoke=cfg.smoke, check=False).epochs or recipe.training.epochs


def find_checkpoint(run_dir: str | Path, method: str, seed: int, overrides: Mapping[str, Any], epoch: int, *,
                    check: tuple | None = None) -> Path | None:
    """The checkpoint of ``epoch`` from the first folder of the setting and seed that holds it
    (:func:`dapo.engine.checkpoint_store.sibling_folders`), or ``None``. ``check`` = ``(model, vocabulary,
    training)`` refuses one trained with another configuration or on other backbone weights."""
    from dapo.engine.checkpoint import epoch_path
    from dapo.engine.checkpoint_store import sibling_folders

    for _, folder in sibling_folders(run_dir, method, seed, overrides):
        path = epoch_path(folder, epoch)
        if path.is_file():
            if check is not None:
                _check_folder(path, *check)
            return path
    return None


def _check_folder(path: Path, model, vocabulary, training) -> None:
    from dapo.engine.checkpoint import read_metadata, same_backbone_weights
    from dapo.engine.train import check_same_run

    if not same_backbone_weights(path, model.backbone):
        raise ValueError(f"{path.parent} was trained on other backbone weights than {model.backbone.weights}; "
                         f"checkpoints are never overwritten: train into another results folder (output_dir)")
    check_same_run(read_metadata(path), model, vocabulary, training, path.parent)


def _start_from_shorter(run_dir, method, seed, overrides, folder: Path, epochs: int, check: tuple) -> None:
    """Seed an empty ``folder`` from the longest shorter training of the setting that kept its
    optimiser state (exact resume; the same weights as training from scratch), if any."""
    from dapo.engine.checkpoint import list_checkpoints
    from dapo.engine.checkpoint_store import FolderBusyError, folder_lock, seed_folder, sibling_folders
    from dapo.engine.train import LOSS_CSV, state_path

    candidates = []
    for _, other in sibling_folders(run_dir, method, seed, overrides):
        resumable = [c for c in list_checkpoints(other) if c.epoch < epochs and state_path(other, c.epoch).is_file()]
        if other != folder and resumable:
            candidates.append((resumable[-1], other))
    if not candidates:
        return
    checkpoint, source = max(candidates, key=lambda item: item[0].epoch)
    _check_folder(checkpoint.path, *check)
    try:
        with folder_lock(source, wait=False):  # its optimiser state is not replaced while we copy it
            seed_folder(folder, source, checkpoint.epoch, state_path(source, checkpoint.epoch), LOSS_CSV)
    except FolderBusyError:
        pass  # another process is extending it: train from scratch (the same weights)


def _model_overrides(method: str, overrides: Mapping[str, Any]) -> dict:
    from dapo.methods import get
    from dapo.methods.recipe import split_overrides

    return split_overrides(dict(overrides), get(method).model.config_class)[0]


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
# Under torchrun (dapo.engine.distributed) the evaluators below see each rank's share and are merged:
# every rank returns the one-process result.


def predict_products(model, dataset, *, device: str = "auto", precision: str = "auto", batch_size: int = 8,
                     num_workers: int = 0, vocabulary: str = "product", desc: str = "predict", progress: bool = True):
    """Yield ``(product, vocabulary, batch, prediction)`` product by product, each product scored
    against its own defect types (``vocabulary="product"``) or the dataset's (``"dataset"``);
    text embeddings are computed once per product; ``precision`` as :class:`dapo.engine.inference.Predictor`.
    Under torchrun each rank predicts its share of the batches (:func:`dapo.engine.distributed.shard_pairs`)."""
    from torch.utils.data import Subset

    from dapo.data import collate_samples
    from dapo.engine.distributed import current, shard_pairs
    from dapo.engine.inference import Predictor

    dev = resolve_device(device)
    model = model.to(dev).eval()
    world = current()
    parts = {product: dataset.subset(product) for product in dataset.products}
    mine: dict[str, list[int]] = {}
    for product, position in shard_pairs([(p, i) for p, part in parts.items() for i in range(len(part))],
                                         batch_size, world):
        mine.setdefault(product, []).append(position)
    for product in tqdm(mine, desc=desc, disable=not progress or not world.main):
        words = dataset.vocabulary(product) if vocabulary == "product" else dataset.dataset_vocabulary
        predictor = Predictor(model, words, product=product, precision=precision)
        part = parts[product]
        loader = DataLoader(part if len(mine[product]) == len(part) else Subset(part, mine[product]),
                            batch_size=batch_size, num_workers=num_workers, collate_fn=collate_samples)
        for batch in loader:
            with torch.no_grad():
                yield product, words, batch, predictor(batch["image"].to(dev))


@ledger.timed_evaluation
def evaluate_multitype(model, dataset, *, desc: str = "multi-type", **kwargs):
    """Zero-shot multi-type segmentation of every product over normal + its own defect types
    (the protocol of both official codes, whatever the method's binary vocabulary)."""
    from dapo.engine.distributed import reduce_evaluator
    from dapo.metrics import MultiTypeEvaluator

    evaluator = MultiTypeEvaluator()
    for product, vocabulary, batch, pred in predict_products(model, dataset, desc=desc, vocabulary="product",
                                                             **kwargs):
        evaluator.add(product, ("normal", *vocabulary), pred["type_probs"].float().cpu(), batch["type_mask"])
    return reduce_evaluator(evaluator).compute()


def binary_evaluator(model, dataset, *, desc: str = "binary", **kwargs):
    """The filled :class:`~dapo.metrics.BinaryEvaluator` of every product (its ``compute``,
    ``roc_curve`` and ``rates_at``); the defect vocabulary per product follows
    ``model.config.inference_vocabulary``."""
    from dapo.engine.distributed import reduce_evaluator
    from dapo.metrics import BinaryEvaluator

    evaluator = BinaryEvaluator()
    for _, _, batch, pred in predict_products(model, dataset, desc=desc,
                                              vocabulary=model.config.inference_vocabulary, **kwargs):
        evaluator.add(batch["product"], pred["image_score"].float().cpu(), batch["label"],
                      pred["anomaly_map"].float().cpu(), batch["mask"])
    return reduce_evaluator(evaluator)


@ledger.timed_evaluation
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


@ledger.timed_evaluation
def evaluate_binary_curves(model, dataset, *, thresholds: Sequence[float] = CURVE_THRESHOLDS,
                           desc: str = "binary", **kwargs) -> BinaryEvaluation:
    """:func:`evaluate_binary` plus the image-level ROC points and the rates at ``thresholds``
    (DAPO Fig. 4 and Fig. 10), computed from the same streaming evaluator."""
    evaluator = binary_evaluator(model, dataset, desc=desc, **kwargs)
    return BinaryEvaluation(evaluator.compute(), evaluator.roc_curve("image", pooled=True),
                            evaluator.rates_at(list(thresholds), "image", pooled=True))


@ledger.timed_evaluation
def multilabel_evaluator(model, dataset, *, desc: str = "multi-label", **kwargs):
    """The filled :class:`~dapo.metrics.MultiLabelEvaluator` (Eq. 11, Table 11): per product, the
    image-level ``P(D_k)`` (``Prediction.defect_probs``) of the product's own defect types against
    the defect types each image shows (``batch["defects"]``; normal images have none)."""
    from dapo.engine.distributed import reduce_evaluator
    from dapo.metrics import MultiLabelEvaluator

    evaluator = MultiLabelEvaluator()
    for product, vocabulary, batch, pred in predict_products(model, dataset, desc=desc, vocabulary="product",
                                                             **kwargs):
        evaluator.add(product, vocabulary, pred["defect_probs"].float().cpu(), [tuple(d) for d in batch["defects"]])
    return reduce_evaluator(evaluator)


#: DAPOConfig fields read only at inference (:mod:`dapo.engine.inference`, the runners); training never reads them.
INFERENCE_FIELDS = ("name", "inference_vocabulary", "global_score", "image_score_global_weight", "map_score",
                    "smoothing_sigma")


def inference_variant(model, method: str):
    """A trained ``model`` scored as the preset ``method``, which must differ from the model's own
    configuration only in :data:`INFERENCE_FIELDS` (MultiADS-F: MultiADS's trained model scoring
    each product's own defect types with its own image score, as ``test_prior_knowledge.py`` loads
    the MultiADS checkpoint). The variant shares the model's parameters; nothing is trained."""
    import copy

    from dapo.methods import config_for

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
                     device: str = "auto", progress: bool = True, cache: str | Path | None = "auto",
                     **kwargs) -> dict[str, dict[str, list]]:
    """``{dataset: {label: [evaluate(model, dataset) per seed]}}`` for :func:`train_methods`'s output.

    A training-free method (no loss history) is the same model under every seed: it is
    evaluated once, so its tables show one value and no spread.

    :func:`evaluate_binary` and :func:`evaluate_binary_curves` go through the evaluation cache shared
    by every notebook (:mod:`dapo.experiments.evaluation_cache`), keyed by the evaluation, the model's
    tensors and config, the dataset, the precision and the code: a model another notebook (or an
    interrupted run) evaluated already is read back, byte for byte, instead of evaluated again. Both
    share one entry (the curves at the default thresholds; :func:`evaluate_binary` is its table).
    ``cache``: ``"auto"`` (the folder of the run :func:`start_run` started,
    ``<output_dir>/cache/evaluations``), a folder, or ``None`` (off); the environment variable
    ``DAPO_EVALUATION_CACHE=0`` turns it off everywhere. Other evaluators are never cached.
    """
    from dapo.experiments.evaluation_cache import cache_folder, model_fingerprint

    shared = evaluate is evaluate_binary or evaluate is evaluate_binary_curves
    folder = cache_folder(cache) if shared else None
    results: dict[str, dict[str, list]] = {name: {} for name in datasets}
    for (label, seed), (model, history) in trained.items():
        model_key = None
        for name, dataset in datasets.items():
            per_seed = results[name].setdefault(label, [])
            if history is None and per_seed:
                continue
            desc = f"{label} seed {seed} on {name}"
            if folder is None:
                per_seed.append(evaluate(model, dataset, device=device, progress=progress, desc=desc, **kwargs))
                continue
            model_key = model_key or model_fingerprint(model)
            curves = _cached_curves(folder, model_key, model, dataset, device=device, progress=progress, desc=desc,
                                    **kwargs)
            per_seed.append(curves if evaluate is evaluate_binary_curves else curves.table)
    return results


def _cached_curves(folder: Path, model_key: dict, model, dataset, *, device: str, progress: bool, desc: str,
                   **kwargs) -> BinaryEvaluation:
    """:func:`evaluate_binary_curves` through the shared cache: one entry serves both binary evaluators
    (:func:`evaluate_binary` is its ``table``, computed by the same evaluator)."""
    from dapo.experiments.evaluation_cache import cached, entry_key
    from dapo.util.progress import mode as progress_mode

    precision = resolve_precision(kwargs.get("precision", "auto"), resolve_device(device))
    arguments = {"batch_size": 8, **kwargs, "thresholds": [float(t) for t in kwargs.get("thresholds", CURVE_THRESHOLDS)]}
    key = entry_key("dapo.experiments.runs.evaluate_binary_curves", arguments, model_key, dataset, precision)

    computed = []

    def compute() -> dict:
        result = evaluate_binary_curves(model, dataset, device=device, progress=progress, desc=desc, **kwargs)
        computed.append(True)
        return {"table": result.table, "roc": result.roc, "rates": result.rates}
    start = time.perf_counter()
    frames = cached(folder, key, compute, ("table", "roc", "rates"),
                    announce=f"{desc}: read from the evaluation cache" if progress and progress_mode() != "off" else None)
    if not computed:  # a computed one was recorded by evaluate_binary_curves itself
        ledger.record_work("evaluation", f"evaluate_binary_curves: {desc}", "cached", time.perf_counter() - start)
    return BinaryEvaluation(**frames)
