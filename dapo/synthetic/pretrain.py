"""Pretraining of the compact CLIP on the captioned synthetic corpus.

The model is a plain OpenCLIP ``CLIP`` built from ``dapo/assets/dapo-compact.json`` (ViT
image tower, OpenCLIP text tower and tokenizer), so the saved state dict loads with
``open_clip.create_model("dapo-compact", pretrained=path)`` and through
:func:`dapo.backbone.load_backbone`.

Each step sees ``full_per_step`` full views and the local views (patch-aligned crops, see
:mod:`dapo.synthetic.corpus`) of ``local_images_per_step`` other images, all of
``products_per_step`` products. Loss = contrastive + ``state_weight`` x state +
``aux_weight`` x dense auxiliary + ``global_aux_weight`` x global auxiliary.

* Contrastive: CLIP's symmetric image-text cross-entropy over all views of the step, with
  one change for a small world where a batch holds several images of the same product and
  defect: every caption that truthfully describes a view
  (:class:`dapo.synthetic.captions.CaptionKey`) is a positive, and the target distribution
  is uniform over the positives (multi-positive InfoNCE). With one positive per row this is
  exactly CLIP's loss.
* State (hard negatives, in the spirit of NegCLIP): each view with at most one defect type
  against one caption per state of its product (normal and every defect type), captions
  that differ only in the defect they name (:func:`state_loss`).
* Dense auxiliary loss (this project's choice, not CLIP's recipe): the patch tokens of
  vision layer ``aux_layer`` go through a linear head (LayerNorm + Linear) that classifies
  each patch as defect-free or as one defect type; cross-entropy balanced between defective
  and defect-free patches.
* Global auxiliary loss (this project's choice, as LiT starts from a supervised image
  tower): linear heads on the image embedding classify the product and the state
  (normal or one defect type) of each view (cross-entropy).

Local views, hard negatives and auxiliary losses stand in for the scale of real CLIP
pretraining: 400M web pairs teach CLIP local visual concepts, a CPU budget of under an hour
of synthetic pairs cannot without them. The auxiliary heads are discarded (the checkpoint is
a plain OpenCLIP ``CLIP``), and the last layer's patch tokens are never aligned with text,
so CLIP-AC-style zero-shot segmentation stays weak, as with real CLIP.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from dapo.synthetic.captions import GENERIC_OBJECT, exact_caption, product_words
from dapo.synthetic.corpus import (DEFECT_ORDER, IGNORE, CorpusSpec, View, collate_views, full_view, local_views,
                                   positive_matrix)
from dapo.synthetic.generator import applicable_defects, make_rng

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
COMPACT_MODEL = "dapo-compact"
COMPACT_CONFIG = ASSETS_DIR / f"{COMPACT_MODEL}.json"
COMPACT_WEIGHTS = ASSETS_DIR / f"{COMPACT_MODEL}.safetensors"
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class PretrainConfig:
    """Hyperparameters of the pretraining run (the recipe being tuned; see README on the
    status of the committed checkpoint).

    ``products_per_step``: the images of a step show this many products (0: each image draws
    its own), so that captions of the same product with other defects are in-batch
    negatives. ``state_weight``: weight of the hard-negative state loss (see the module doc).

    ``precision``: ``"bf16"`` autocast (fast on CPUs with AMX/AVX-512-BF16 and on GPUs) or
    ``"fp32"``. ``threads``: CPU threads (2 = the project's reference machine).
    """

    seed: int = 0
    steps: int = 1500
    full_per_step: int = 16
    local_images_per_step: int = 16
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 60
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    products_per_step: int = 4
    state_weight: float = 1.0
    aux_layer: int = 4
    aux_weight: float = 1.0
    global_aux_weight: float = 1.0
    init: str = "mimetic"
    precision: str = "bf16"
    threads: int = 2
    device: str = "auto"
    checkpoint_every: int = 100
    corpus: CorpusSpec = field(default_factory=CorpusSpec)


def register_compact_config() -> None:
    """Make ``dapo-compact`` known to OpenCLIP (idempotent)."""
    if COMPACT_MODEL not in open_clip.list_models():
        open_clip.add_model_config(COMPACT_CONFIG)


def sincos_positions(grid: int, width: int) -> torch.Tensor:
    """2-D sine-cosine positional table ``(1 + grid * grid, width)`` (MAE), zero for the class token."""
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    parts = [f(axis.reshape(-1, 1) * frequencies) for axis in (rows, cols) for f in (torch.sin, torch.cos)]
    table = torch.zeros(1 + grid * grid, width, dtype=torch.float64)
    table[1:, : 4 * quarter] = torch.cat(parts, dim=1)
    return table.float()


@torch.no_grad()
def mimetic_init(visual: torch.nn.Module, generator: torch.Generator, layers: int,
                 alpha: tuple[float, float] = (0.7, 0.4), beta: tuple[float, float] = (0.7, 0.4)) -> None:
    """Mimetic initialisation (Trockman & Kolter, ICML 2023) of the first ``layers`` vision
    attention layers, with 2-D sine-cosine positions: per head W_q^T W_k ~ alpha0 Z + beta0 I,
    and W_o W_v ~ alpha1 Z - beta1 I (Z Gaussian, variance 1/width), so that attention starts
    local, as in trained ViTs. Deeper layers keep OpenCLIP's initialisation: with
    W_q^T W_k ~ I everywhere the class token attends only to itself and never learns."""
    width = visual.conv1.out_channels
    visual.positional_embedding.copy_(sincos_positions(visual.grid_size[0], width))
    eye = torch.eye(width)
    for block in visual.transformer.resblocks[:layers]:
        attention = block.attn
        heads, head_width = attention.num_heads, width // attention.num_heads
        weight = attention.in_proj_weight
        for h in range(heads):
            target = alpha[0] * torch.randn(width, width, generator=generator) / width**0.5 + beta[0] * eye
            u, singular, vh = torch.linalg.svd(target)
            root = singular[:head_width].sqrt()
            rows = slice(h * head_width, (h + 1) * head_width)
            weight[rows] = (u[:, :head_width] * root).t()
            weight[width:][rows] = root[:, None] * vh[:head_width]
        target = alpha[1] * torch.randn(width, width, generator=generator) / width**0.5 - beta[1] * eye
        u, singular, vh = torch.linalg.svd(target)
        weight[2 * width:] = singular.sqrt()[:, None] * vh
        attention.out_proj.weight.copy_(u * singular.sqrt())


def create_compact_model(seed: int, device: str | torch.device = "cpu", init: str = "mimetic",
                         mimetic_layers: int = 4) -> torch.nn.Module:
    """A randomly initialised compact CLIP (fixed by ``seed``): OpenCLIP's initialisation, and
    with ``init="mimetic"`` the first ``mimetic_layers`` attention layers and the positions
    set by :func:`mimetic_init`."""
    register_compact_config()
    torch.manual_seed(seed)
    model = open_clip.create_model(COMPACT_MODEL)
    if init == "mimetic":
        mimetic_init(model.visual, torch.Generator().manual_seed(seed), mimetic_layers)
    elif init != "openclip":
        raise ValueError(f"init must be 'mimetic' or 'openclip', got {init!r}")
    return model.to(device)


def encode_views(visual: torch.nn.Module, images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Image embeddings of views (full images or patch-aligned crops), OpenCLIP's ViT forward
    with the positional embeddings of the patches each view shows (offsets in patches)."""
    x = visual.conv1(images)
    batch, width, rows, cols = x.shape
    x = x.flatten(2).transpose(1, 2)
    grid = visual.grid_size[1]
    row_index = offsets[:, :1, None] + torch.arange(rows, device=x.device)[None, :, None]
    col_index = offsets[:, 1:, None] + torch.arange(cols, device=x.device)[None, None, :]
    positions = visual.positional_embedding[1 + (row_index * grid + col_index).flatten(1)]
    cls = (visual.class_embedding + visual.positional_embedding[0]).expand(batch, 1, width)
    x = visual.ln_pre(torch.cat([cls.to(x.dtype), x + positions.to(x.dtype)], dim=1))
    x = visual.ln_post(visual.transformer(x))
    return x[:, 0] @ visual.proj


def multi_positive_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                             positives: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy with targets uniform over each row's (column's) positives.

    ``positives[i, j]``: caption ``j`` describes image ``i``; every row and column needs one.
    """
    logits = logit_scale * image_features @ text_features.t()
    targets = positives.float()
    if not bool((targets.sum(1) > 0).all() and (targets.sum(0) > 0).all()):
        raise ValueError("every image and every caption needs at least one positive")
    image_loss = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_loss = -(targets.t() / targets.t().sum(1, keepdim=True) * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (image_loss + text_loss) / 2


def balanced_patch_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over patches, defective and defect-free patches weighted half each.

    ``logits`` ``(N, C)``, ``labels`` ``(N,)`` with 0 = defect-free and ``IGNORE`` (< 0)
    skipped; a batch without defective (or defect-free) patches uses the other half alone.
    """
    losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    parts = [losses[labels == 0], losses[labels > 0]]
    means = [part.mean() for part in parts if part.numel()]
    return torch.stack(means).mean() if means else logits.sum() * 0.0


def global_targets(views: list[View], products: tuple[str, ...], named_min_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the global heads: product index (``IGNORE`` for views under
    ``named_min_size`` pixels) and state index (0 = normal, ``1 + k`` = ``DEFECT_ORDER[k]``,
    ``IGNORE`` for views with two defect types)."""
    product = [products.index(v.product) if v.image.shape[-1] >= named_min_size else IGNORE for v in views]
    state = [IGNORE if len(v.defects) > 1 else (1 + DEFECT_ORDER.index(v.defects[0]) if v.defects else 0)
             for v in views]
    return torch.tensor(product), torch.tensor(state)


class PatchTap:
    """Keeps the output of one vision block during the forward pass (a forward hook)."""

    def __init__(self, model: torch.nn.Module, layer: int) -> None:
        blocks = model.visual.transformer.resblocks
        if not 1 <= layer <= len(blocks):
            raise ValueError(f"aux_layer={layer} must lie in 1..{len(blocks)}")
        self.output: torch.Tensor | None = None
        self.handle = blocks[layer - 1].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.output = output

    def patches(self) -> torch.Tensor:
        """Patch tokens ``(B, N, D)`` of the last forward pass (class token dropped)."""
        return self.output[:, 1:]


def make_aux_heads(model: torch.nn.Module, seed: int, products: tuple[str, ...]) -> torch.nn.ModuleDict:
    """The discarded heads: ``dense`` (LayerNorm + Linear, vision width -> 1 + defect types)
    and the global heads ``product`` and ``state`` (Linear, embedding -> products and
    embedding -> normal + defect types)."""
    torch.manual_seed(seed + 1)
    width = model.visual.conv1.out_channels
    return torch.nn.ModuleDict({
        "dense": torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 1 + len(DEFECT_ORDER))),
        "product": torch.nn.Linear(model.visual.output_dim, len(products)),
        "state": torch.nn.Linear(model.visual.output_dim, 1 + len(DEFECT_ORDER)),
    })


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on gains, biases, embeddings or the logit scale)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        exempt = parameter.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step: int, config: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def step_products(config: PretrainConfig, step: int) -> tuple[str, ...] | None:
    """The products shown in ``step`` (``None``: every image draws its own)."""
    if config.products_per_step <= 0:
        return None
    rng = make_rng(config.seed, "step-products", step)
    products = config.corpus.products
    picks = rng.choice(len(products), size=min(config.products_per_step, len(products)), replace=False)
    return tuple(products[int(i)] for i in picks)


def step_views(config: PretrainConfig, step: int) -> list[View]:
    """Full and local views of one step (a pure function of the seed and the step)."""
    products = step_products(config, step)

    def product(j: int) -> str | None:
        return None if products is None else products[j % len(products)]

    spec, seed = config.corpus, config.seed
    full = [full_view(spec, seed, step * config.full_per_step + j, product(j)) for j in range(config.full_per_step)]
    local = [v for j in range(config.local_images_per_step)
             for v in local_views(spec, seed, step * config.local_images_per_step + j, product(j))]
    return full + local


def state_texts(config: PretrainConfig, step: int,
                views: list[View]) -> tuple[list[str], list[int], list[list[int]], list[int]]:
    """Captions of every state (normal or one defect type) of the subjects of ``views``.

    A view showing at most one defect type is scored against the states of its subject: its
    product for views of at least ``named_product_min_size`` pixels, else "object" (all
    defect types). Returns the texts, the indices of the scored views, per scored view the
    indices of its candidate texts, and per scored view the position of its true state among
    its candidates.
    """
    rng = make_rng(config.seed, "state-captions", step)
    texts, rows, scored = [], {}, []
    for index, view in enumerate(views):
        if len(view.defects) > 1:
            continue
        named = view.image.shape[-1] >= config.corpus.named_product_min_size
        subject = view.product if named else GENERIC_OBJECT
        if subject not in rows:
            states = ("normal", *(applicable_defects(view.product) if named else DEFECT_ORDER))
            rows[subject] = {state: len(texts) + k for k, state in enumerate(states)}
            words = product_words(subject) if named else GENERIC_OBJECT
            texts += [exact_caption(rng, words, () if state == "normal" else (state,), config.corpus.captions)
                      for state in states]
        scored.append((index, rows[subject], view.defects[0] if view.defects else "normal"))
    candidates = [list(states.values()) for _, states, _ in scored]
    targets = [list(states).index(state) for _, states, state in scored]
    return texts, [index for index, _, _ in scored], candidates, targets


def state_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
               candidates: list[list[int]], targets: list[int]) -> torch.Tensor:
    """Hard-negative cross-entropy: each image against the captions of every state of its
    subject (NegCLIP-style negatives that differ from the truth only in the defect named).

    ``image_features`` ``(B, D)`` and ``text_features`` ``(T, D)`` normalised; row ``b``'s
    candidates are ``candidates[b]`` (indices into the texts), its truth
    ``candidates[b][targets[b]]``.
    """
    width = max(len(c) for c in candidates)
    index = torch.tensor([c + [c[0]] * (width - len(c)) for c in candidates], device=image_features.device)
    valid = torch.tensor([[k < len(c) for k in range(width)] for c in candidates], device=image_features.device)
    logits = logit_scale * (image_features[:, None, :] * text_features[index]).sum(-1)
    logits = logits.masked_fill(~valid, float("-inf"))
    return F.cross_entropy(logits, torch.tensor(targets, device=image_features.device))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def _autocast(device: torch.device, precision: str):
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _by_size(views: list[View]) -> list[list[View]]:
    sizes = sorted({v.image.shape[-1] for v in views}, reverse=True)
    return [[v for v in views if v.image.shape[-1] == size] for size in sizes]


def _step_losses(model, heads, tap, step: int, tokenizer, config, device) -> dict:
    ordered = _by_size(step_views(config, step))
    groups = [collate_views(group, tokenizer) for group in ordered]
    embeddings, patch_logits, labels = [], [], []
    with _autocast(device, config.precision):
        for group in groups:
            embeddings.append(encode_views(model.visual, group["images"].to(device), group["offsets"].to(device)))
            patch_logits.append(heads["dense"](tap.patches()).float().flatten(0, 1))
            labels.append(group["patch_labels"].to(device).flatten())
        views = [v for group in ordered for v in group]
        texts, scored, candidates, targets = state_texts(config, step, views)
        tokens = torch.cat([g["tokens"] for g in groups] + [tokenizer(texts)])
        text = model.encode_text(tokens.to(device), normalize=True).float()
        image_embedding = torch.cat(embeddings)
        product_logits = heads["product"](image_embedding).float()
        state_logits = heads["state"](image_embedding).float()
    captions, state_captions = text[:len(views)], text[len(views):]
    image_features = F.normalize(image_embedding.float(), dim=-1)
    scale = model.logit_scale.exp()
    contrastive = multi_positive_clip_loss(image_features, captions, scale, positive_matrix(views).to(device))
    states = state_loss(image_features[scored], state_captions, scale, candidates, targets)
    dense = balanced_patch_loss(torch.cat(patch_logits), torch.cat(labels))
    product_target, state_target = global_targets(views, config.corpus.products, config.corpus.named_product_min_size)
    supervised = (F.cross_entropy(product_logits, product_target.to(device), ignore_index=IGNORE)
                  + F.cross_entropy(state_logits, state_target.to(device), ignore_index=IGNORE))
    total = (contrastive + config.state_weight * states + config.aux_weight * dense
             + config.global_aux_weight * supervised)
    return {"loss": total, "contrastive": contrastive, "state": states, "dense": dense, "global": supervised}


def pretrain(config: PretrainConfig, run_dir: str | Path, *, output: str | Path = COMPACT_WEIGHTS,
             resume: bool = True, monitor=None) -> Path:
    """Train the compact CLIP and write its weights to ``output``; returns ``output``.

    ``run_dir`` receives ``log.csv`` (one row per step), ``state.pt`` (resumable every
    ``checkpoint_every`` steps) and, with ``monitor(model, step) -> dict``, ``eval.csv`` (one
    row per checkpoint, e.g. held-out zero-shot accuracy).
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
    optimizer = torch.optim.AdamW(_param_groups(trained, config.weight_decay), lr=config.lr, betas=config.betas,
                                  eps=1e-6)
    state_path, log_path = run_dir / "state.pt", run_dir / "log.csv"
    start = 0
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["config"] != asdict(config):
            raise ValueError(f"{state_path} was written by a run with another configuration; use a new run "
                             f"folder or resume=False")
        trained.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    else:
        for stale in (log_path, run_dir / "eval.csv"):
            stale.unlink(missing_ok=True)
    model.train()
    began = time.time()
    progress = tqdm(range(start, config.steps), desc="pretraining compact CLIP")
    for step in progress:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = _step_losses(model, heads, tap, step, tokenizer, config, device)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        done = step + 1
        row = {"step": done, **{k: round(v.item(), 5) for k, v in losses.items()}, "lr": f"{lr:.3e}",
               "logit_scale": round(model.logit_scale.exp().item(), 3), "seconds": round(time.time() - began, 1)}
        _append_csv(log_path, row)
        progress.set_postfix(loss=row["loss"], scale=row["logit_scale"])
        if done % config.checkpoint_every == 0 or done == config.steps:
            torch.save({"model": trained.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
                        "config": asdict(config)}, state_path)
            if monitor is not None:
                model.eval()
                _append_csv(run_dir / "eval.csv", {"step": done, **monitor(model, done)})
                model.train()
    tap.handle.remove()
    model.eval()
    metadata = {"model": COMPACT_MODEL, "config": json.dumps(asdict(config)), "torch": torch.__version__,
                "open_clip": open_clip.__version__, "device": str(device)}
    return save_compact_weights(model, output, metadata)
