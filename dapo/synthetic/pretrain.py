"""Pretraining of the compact CLIP on the captioned synthetic corpus, in two stages (LiT).

The model is a plain OpenCLIP ``CLIP`` built from ``dapo/assets/dapo-compact.json`` (ViT
image tower, OpenCLIP text tower and tokenizer), so the saved state dict loads with
``open_clip.create_model("dapo-compact", pretrained=path)`` and through
:func:`dapo.clip.backbone.load_backbone`.

This module holds the schedule, the steps, the loop and its files; the parts it runs live by job
(and stay importable from here): the model in :mod:`dapo.synthetic.compact_model`, the settings
in :mod:`dapo.synthetic.pretrain_config`, what each step sees in :mod:`dapo.synthetic.pretrain_data`,
the losses and the discarded heads in :mod:`dapo.synthetic.pretrain_losses`.

The schedule follows LiT (Zhai et al., CVPR 2022: a supervised image tower, then
contrastive *locked-image tuning* of the text tower), because a CLIP trained jointly from
scratch learns far too slowly for a budget of an hour on 2 CPU cores (README, "The synthetic
profile"):

1. **Image tower** (``image_steps``): each step sees ``full_per_step`` full views and the
   local views (patch-aligned crops, see :mod:`dapo.synthetic.corpus`) of
   ``local_images_per_step`` other images. Loss = product + state + ``dense_weight`` x dense:
   linear heads on the image embedding classify the product (views of at least
   ``named_product_min_size`` pixels) and the state (normal or the one defect type; the
   normal class weighted down to an average defect type, see :func:`state_class_weights`);
   a LayerNorm + Linear head on the patch tokens of vision layer ``aux_layer`` classifies
   each patch as defect-free or one defect type (:func:`balanced_patch_loss`).
2. **Text tower** (``text_steps``, the image tower locked): image embeddings of
   ``text_images`` full views are computed once; each step pairs ``text_batch`` of them with
   freshly sampled captions. Loss = CLIP's symmetric image-text cross-entropy, with every
   caption that truthfully describes an image a positive (multi-positive InfoNCE; with one
   positive per row it is exactly CLIP's loss), + ``state_weight`` x a hard-negative state
   loss in the spirit of NegCLIP: each image against one caption per state of its product,
   captions that differ only in the defect they name (:func:`state_loss`). Trained: the
   text tower, the logit scale and the image tower's final projection ``visual.proj`` (LiT
   locks the projection too), and with ``text_tunes_last_block`` (the default) also the last
   vision block and ``ln_post``: then the tokens entering that block are what is computed
   once, and the block runs for the class token alone (:func:`last_block_class_token`).
   These are this project's choices: a linear read-out of the fully locked tower stops
   under the 70 % defect-type bar (README, "The synthetic profile").

The heads are discarded (the checkpoint is a plain OpenCLIP ``CLIP``), and patch tokens are
never aligned with text, so CLIP-AC-style zero-shot segmentation stays weak, as with real
CLIP.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dapo.synthetic.captions import sample_caption
from dapo.synthetic.compact_model import (
    ASSETS_DIR,
    COMPACT_CONFIG,
    COMPACT_MODEL,
    COMPACT_WEIGHTS,
    create_compact_model,
    encode_views,
    last_block_class_token,
    locked_features,
    mimetic_init,
    register_compact_config,
    sincos_positions,
    view_tokens,
)
from dapo.synthetic.corpus import IGNORE, View, collate_views, positive_matrix
from dapo.synthetic.generator import make_rng
from dapo.synthetic.pretrain_config import PretrainConfig
from dapo.synthetic.pretrain_data import (
    ImageStepViews,
    LockedImages,
    image_step_loader,
    locked_images,
    state_texts,
    step_views,
)
from dapo.synthetic.pretrain_losses import (
    PatchTap,
    balanced_patch_loss,
    global_targets,
    make_aux_heads,
    multi_positive_clip_loss,
    state_class_weights,
    state_loss,
)
from dapo.util.atomic import atomic_path
from dapo.util.loading import load_state
from dapo.util.precision import autocast, resolve_device
from dapo.util.progress import tqdm

__all__ = [  # this module's own names, and those of the modules it was split into (importable from here)
    "ASSETS_DIR", "COMPACT_CONFIG", "COMPACT_MODEL", "COMPACT_WEIGHTS", "LOG_COLUMNS", "MAX_LOGIT_SCALE",
    "ImageStepViews", "LockedImages", "PatchTap", "PretrainConfig", "balanced_patch_loss", "create_compact_model",
    "encode_views", "global_targets", "image_step_loader", "last_block_class_token", "learning_rate",
    "locked_features", "locked_images", "make_aux_heads", "mimetic_init", "multi_positive_clip_loss", "pretrain",
    "register_compact_config", "resolve_device", "save_compact_weights", "sincos_positions", "state_class_weights",
    "state_loss", "state_texts", "step_views", "text_stage_parameters", "view_tokens",
]


MAX_LOGIT_SCALE = math.log(100.0)


def _param_groups(named_parameters, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on gains, biases, embeddings or the logit scale)."""
    decay, no_decay = [], []
    for name, parameter in named_parameters:
        exempt = parameter.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step: int, steps: int, peak: float, config: PretrainConfig) -> float:
    """Linear warm-up over ``config.warmup_steps``, then cosine decay over the rest of
    ``steps`` to ``config.min_lr_ratio * peak``."""
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, steps - config.warmup_steps)
    floor = peak * config.min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def text_stage_parameters(model: torch.nn.Module, last_block: bool = False) -> list[tuple[str, torch.nn.Parameter]]:
    """What the text stage trains: the text tower, the logit scale and ``visual.proj``; with
    ``last_block`` also the last vision block and ``ln_post``."""
    last = f"visual.transformer.resblocks.{len(model.visual.transformer.resblocks) - 1}."
    tuned = ("visual.proj", "visual.ln_post.", last) if last_block else ("visual.proj",)
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("visual.") or n.startswith(tuned)]


def save_compact_weights(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Save the state dict in fp16 safetensors (what ``open_clip.create_model`` loads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _image_step(model, heads, tap, ordered: list[list[View]], config: PretrainConfig, device, class_weights) -> dict:
    """Losses of one image-tower step (stage 1) on its views grouped by size."""
    embeddings, patch_logits, labels = [], [], []
    with autocast(device, config.precision):
        for group in ordered:
            batch = collate_views(group)
            embeddings.append(encode_views(model.visual, batch["images"].to(device), batch["offsets"].to(device)))
            patch_logits.append(heads["dense"](tap.patches()).float().flatten(0, 1))
            labels.append(batch["patch_labels"].to(device).flatten())
        image_embedding = torch.cat(embeddings)
        product_logits = heads["product"](image_embedding).float()
        state_logits = heads["state"](image_embedding).float()
    views = [v for group in ordered for v in group]
    product_target, state_target = global_targets(views, config.corpus.products, config.corpus.named_product_min_size)
    product = F.cross_entropy(product_logits, product_target.to(device), ignore_index=IGNORE)
    state = F.cross_entropy(state_logits, state_target.to(device), weight=class_weights, ignore_index=IGNORE)
    dense = balanced_patch_loss(torch.cat(patch_logits), torch.cat(labels))
    return {"loss": product + state + config.dense_weight * dense, "product": product, "state": state, "dense": dense}


def _text_step(model, images: LockedImages, step: int, tokenizer, config: PretrainConfig, device) -> dict:
    """Losses of one text-tower step (stage 2): captions sampled afresh for a random batch."""
    rng = make_rng(config.seed, "text-step", step)
    index = rng.choice(len(images.products), size=min(config.text_batch, len(images.products)), replace=False)
    products = [images.products[i] for i in index]
    defects = [images.defects[i] for i in index]
    captions, keys = zip(*(sample_caption(rng, p, d, config.corpus.captions) for p, d in zip(products, defects)))
    texts, scored, candidates, targets = state_texts(rng, products, defects, config.corpus.captions)
    with autocast(device, config.precision):
        text = model.encode_text(tokenizer(list(captions) + texts).to(device), normalize=True).float()
    features = images.features[torch.as_tensor(index, device=device)]
    if config.text_tunes_last_block:
        with autocast(device, config.precision):
            features = last_block_class_token(model.visual, features).float()
    image = F.normalize(features @ model.visual.proj.float(), dim=-1)
    scale = model.logit_scale.exp()
    positives = positive_matrix(keys, products, defects).to(device)
    contrastive = multi_positive_clip_loss(image, text[:len(captions)], scale, positives)
    state = state_loss(image[scored], text[len(captions):], scale, candidates, targets)
    return {"loss": contrastive + config.state_weight * state, "contrastive": contrastive, "state": state}


LOG_COLUMNS = ("step", "stage", "loss", "product", "state", "dense", "contrastive", "lr", "logit_scale", "seconds")


def pretrain(config: PretrainConfig, run_dir: str | Path, *, output: str | Path = COMPACT_WEIGHTS,
             resume: bool = True, monitor=None, loader_workers: int = 0) -> Path:
    """Train the compact CLIP (both stages) and write its weights to ``output``; returns ``output``.

    ``loader_workers`` processes generate the image stage's views ahead of training (0: in
    the training loop); the model does not depend on it. Worth it beside a GPU; on 2 CPU
    cores the worker competes with training and is slower (``benchmarks/bench_pretrain_loader.py``).

    ``run_dir`` receives ``log.csv`` (one row per step), ``state.pt`` (resumable every
    ``checkpoint_every`` steps and at the end of each stage; written atomically and read back as
    data only, :func:`dapo.util.loading.load_state`) and, with
    ``monitor(model, heads, stage, step) -> dict``, ``eval.csv`` (one row per checkpoint,
    e.g. held-out accuracy of the heads in stage ``"image"``, zero-shot in stage ``"text"``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    model = create_compact_model(config.seed, device, config.init, config.aux_layer)
    heads = make_aux_heads(model, config.seed, config.corpus.products).to(device)
    tap = PatchTap(model, config.aux_layer)
    tokenizer = open_clip.get_tokenizer(COMPACT_MODEL)
    trained = torch.nn.ModuleDict({"clip": model, "aux_heads": heads})
    image_parameters = [(f"visual.{n}", p) for n, p in model.visual.named_parameters()]
    image_parameters += [(f"heads.{n}", p) for n, p in heads.named_parameters()]
    optimizers = {stage: torch.optim.AdamW(_param_groups(named, config.weight_decay), lr=peak, betas=config.betas,
                                           eps=1e-6)
                  for stage, named, peak in (
                      ("image", image_parameters, config.lr),
                      ("text", text_stage_parameters(model, config.text_tunes_last_block), config.text_lr))}
    state_path, log_path = run_dir / "state.pt", run_dir / "log.csv"
    start = 0
    if resume and state_path.is_file():
        state = load_state(state_path, "pretraining state", device,
                           "delete it (or pass resume=False) to pretrain from the start")
        if not isinstance(state, dict) or not {"model", "step", "config", "optimizers"} <= set(state):
            raise ValueError(f"{state_path} is not a pretraining state of this code (expected the keys model, step, "
                             f"config, optimizers); delete it or pass resume=False")
        if state["config"] != asdict(config):
            raise ValueError(f"{state_path} was written by a run with another configuration; use a new run "
                             f"folder or resume=False")
        trained.load_state_dict(state["model"])
        for stage, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][stage])
        start = int(state["step"])
    else:
        for stale in (log_path, run_dir / "eval.csv"):
            stale.unlink(missing_ok=True)
    class_weights = state_class_weights(config.corpus).to(device)
    locked = None
    began = time.time()
    image_views = iter(image_step_loader(config, start, loader_workers)) if start < config.image_steps else None
    progress = tqdm(range(start, config.steps), desc="pretraining compact CLIP", initial=start, total=config.steps)
    for step in progress:
        stage = "image" if step < config.image_steps else "text"
        model.train()
        if stage == "image":
            lr = learning_rate(step, config.image_steps, config.lr, config)
            losses = _image_step(model, heads, tap, next(image_views), config, device, class_weights)
        else:
            if locked is None:
                image_views = None  # ends the loader's workers
                model.eval()
                locked = locked_images(model, config, device)
            stage_step = step - config.image_steps
            lr = learning_rate(stage_step, config.text_steps, config.text_lr, config)
            losses = _text_step(model, locked, stage_step, tokenizer, config, device)
        optimizer = optimizers[stage]
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                       config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        done = step + 1
        row = dict.fromkeys(LOG_COLUMNS, "")
        row.update({"step": done, "stage": stage, **{k: round(v.item(), 5) for k, v in losses.items()},
                    "lr": f"{lr:.3e}", "logit_scale": round(model.logit_scale.exp().item(), 3),
                    "seconds": round(time.time() - began, 1)})
        _append_csv(log_path, row)
        progress.set_postfix(stage=stage, loss=row["loss"])
        if done % config.checkpoint_every == 0 or done in (config.image_steps, config.steps):
            with atomic_path(state_path) as temporary:  # a kill mid-write leaves the previous state whole
                torch.save({"model": trained.state_dict(), "step": done, "config": asdict(config),
                            "optimizers": {k: o.state_dict() for k, o in optimizers.items()}}, temporary)
            if monitor is not None:
                model.eval()
                _append_csv(run_dir / "eval.csv", {"step": done, "stage": stage, **monitor(model, heads, stage, done)})
    tap.handle.remove()
    model.eval()
    metadata = {"model": COMPACT_MODEL, "config": json.dumps(asdict(config)), "torch": torch.__version__,
                "open_clip": open_clip.__version__, "device": str(device)}
    return save_compact_weights(model, output, metadata)
