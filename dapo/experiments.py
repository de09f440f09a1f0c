"""The few calls the notebooks make: prepare data, train or load a method, evaluate it.

Notebook 02 trains through :func:`train_or_load`; notebook 03 calls the same function, so it
trains instead of failing when no checkpoint exists yet. Evaluation runs product by product
with that product's own defect vocabulary (MultiADS/DAPO protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dapo.paths import figures_dir as default_figures_dir
from dapo.paths import results_dir
from dapo.profiles import ProfileConfig, resolve_profile
from dapo.reporting import Provenance, save_figure, save_table, write_provenance
from dapo.precision import resolve_device


@dataclass
class Run:
    """One notebook's run: its profile, provenance and output folders."""

    cfg: ProfileConfig
    prov: Provenance
    seed: int
    device: torch.device
    out_dir: Path
    fig_dir: Path

    def table(self, df, name: str, caption: str = "", **kwargs) -> Path:
        """Save a table as CSV + Markdown under the run's results folder."""
        return save_table(df, name, self.out_dir, self.prov, caption, **kwargs)

    def figure(self, fig, name: str) -> Path:
        """Save a figure as PNG (with the provenance footer) under the run's figures folder."""
        return save_figure(fig, name, self.fig_dir, self.prov)

    def __repr__(self) -> str:
        return (f"Run({self.prov.label}\n    seed={self.seed}, device={self.device}, "
                f"backbone={self.cfg.backbone}/{self.cfg.pretrained} @ {self.cfg.image_size}px, "
                f"train={self.cfg.train_dataset}, targets={list(self.cfg.target_datasets)}\n"
                f"    results -> {self.out_dir}\n    figures -> {self.fig_dir})")


def start_run(profile: str = "synthetic", *, smoke: bool = False, seed: int = 0, data_root=None,
              dataset_roots: dict | None = None, backbone: str | None = None, pretrained: str | None = None,
              checkpoint: str | None = None, device: str = "auto", epochs: int | None = None, output_dir=None,
              figures_dir=None) -> Run:
    """Resolve and check the profile (a 'paper' run with missing data or weights stops here with
    one message listing what to provide), seed everything and create the output folders."""
    cfg = resolve_profile(profile, smoke=smoke, data_root=data_root, dataset_roots=dataset_roots,
                          backbone=backbone, pretrained=pretrained, checkpoint=checkpoint, epochs=epochs)
    torch.manual_seed(seed)
    prov = Provenance.create(profile, seed, cfg.backbone, cfg.pretrained, smoke)
    out_dir = Path(output_dir) if output_dir else results_dir(profile, smoke)
    fig_dir = Path(figures_dir) if figures_dir else default_figures_dir(profile, smoke)
    fig_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, prov)
    return Run(cfg, prov, seed, resolve_device(device), out_dir, fig_dir)


def prepare_data(cfg: ProfileConfig, seed: int = 0) -> dict:
    """Make sure every dataset of the profile is on disk (the synthetic worlds are generated once)."""
    if cfg.profile == "synthetic":
        from dapo.synthetic.worlds import ensure_worlds

        ensure_worlds(cfg.dataset_roots, smoke=cfg.smoke, seed=seed)
    return {name: Path(root) for name, root in cfg.dataset_roots.items()}


def open_profile_dataset(cfg: ProfileConfig, name: str, **kwargs):
    """Open one dataset of the profile at the profile's input size."""
    from dapo.data import open_dataset

    return open_dataset(name, cfg.dataset_roots[name], image_size=cfg.image_size, **kwargs)


def load_profile_backbone(cfg: ProfileConfig, device: torch.device):
    """The profile's frozen backbone; ``pretrained="random"`` gives random weights (for dry runs)."""
    from dapo.backbone import load_backbone

    pretrained = None if cfg.pretrained == "random" else cfg.pretrained
    return load_backbone(cfg.backbone, pretrained, image_size=cfg.image_size, device=str(device),
                         checkpoint=cfg.checkpoint)


def checkpoint_dir(run_dir: str | Path, method: str) -> Path:
    return Path(run_dir) / "checkpoints" / method


def train_or_load(cfg: ProfileConfig, method: str, run_dir: str | Path, *, seed: int = 0,
                  device: str = "auto", epochs: int | None = None, backbone=None, retrain: bool = False,
                  **overrides):
    """Return a trained ``method`` (a name from :mod:`dapo.baselines`) and its loss history.

    The final checkpoint under ``run_dir/checkpoints/<method>`` is loaded when present (unless
    ``retrain``, or it was trained on other backbone weights); otherwise the method is trained
    on the profile's training dataset.
    """
    from dapo.baselines import make_model
    from dapo.checkpoint import same_backbone_weights
    from dapo.train import latest_checkpoint, load_history, load_trained, train

    dev = resolve_device(device)
    backbone = backbone or load_profile_backbone(cfg, dev)
    ckpt_dir = checkpoint_dir(run_dir, method)
    epochs = cfg.epochs if epochs is None else epochs
    final = latest_checkpoint(ckpt_dir)
    if final is not None and not retrain and not same_backbone_weights(final.path, backbone):
        print(f"{ckpt_dir} was trained on other backbone weights than {backbone.weights}: retraining")
        retrain = True
    if final is not None and not retrain and final.epoch >= epochs:
        return load_trained(final.path, backbone).to(dev), load_history(ckpt_dir)
    model = make_model(method, backbone, **overrides)
    if not any(p.requires_grad for p in model.parameters()):
        return model.to(dev), None  # training-free baseline (e.g. CLIP-AC)
    # MultiADS protocol: multi-defect (e.g. MVTec `combined`) images are left out of training.
    dataset = open_profile_dataset(cfg, cfg.train_dataset, split="test", vocab_scope="dataset",
                                   exclude_multi_defect=True)
    result = train(model, dataset, ckpt_dir, epochs=epochs, batch_size=cfg.batch_size, seed=seed,
                   device=str(dev), resume=not retrain)
    return model, result.history


def predict_products(model, dataset, *, device: str = "auto", batch_size: int = 8, num_workers: int = 0,
                     desc: str = "predict"):
    """Yield ``(product, vocabulary, batch, prediction)`` product by product, each product with its
    own defect vocabulary (text embeddings computed once per product)."""
    from dapo.data import collate_samples
    from dapo.inference import Predictor

    dev = resolve_device(device)
    model = model.to(dev).eval()
    for product in tqdm(dataset.products, desc=desc):
        vocabulary = dataset.vocabulary(product)
        predictor = Predictor(model, vocabulary, product=product)
        loader = DataLoader(dataset.subset(product), batch_size=batch_size, num_workers=num_workers,
                            collate_fn=collate_samples)
        for batch in loader:
            with torch.no_grad():
                yield product, vocabulary, batch, predictor(batch["image"].to(dev))


def evaluate_multitype(model, dataset, *, desc: str = "multi-type", **kwargs):
    """Zero-shot multi-type segmentation of every product over normal + its own defect types."""
    from dapo.metrics import MultiTypeEvaluator

    evaluator = MultiTypeEvaluator()
    for product, vocabulary, batch, pred in predict_products(model, dataset, desc=desc, **kwargs):
        evaluator.add(product, ("normal", *vocabulary), pred["type_probs"].float().cpu(), batch["type_mask"])
    return evaluator.compute()


def evaluate_binary(model, dataset, *, desc: str = "binary", **kwargs):
    """Binary detection and segmentation of every product (image and pixel metrics)."""
    from dapo.metrics import BinaryEvaluator

    evaluator = BinaryEvaluator()
    for _, _, batch, pred in predict_products(model, dataset, desc=desc, **kwargs):
        evaluator.add(batch["product"], pred["image_score"].float().cpu(), batch["label"],
                      pred["anomaly_map"].float().cpu(), batch["mask"])
    return evaluator.compute()
