"""Pretraining of the compact CLIP on the captioned synthetic corpus, in two stages (LiT).

The model is a plain OpenCLIP ``CLIP`` built from ``dapo/assets/dapo-compact.json`` (ViT
image tower, OpenCLIP text tower and tokenizer), so the saved state dict loads with
``open_clip.create_model("dapo-compact", pretrained=path)`` and through
:func:`dapo.backbone.load_backbone`.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from dapo.precision import autocast, resolve_device
from dapo.synthetic.captions import CaptionPolicy, exact_caption, product_words, sample_caption
from dapo.synthetic.corpus import (
    DEFECT_ORDER,
    IGNORE,
    TEXT_STREAM,
    CorpusSpec,
    View,
    collate_views,
    full_view,
    local_views,
    positive_matrix,
    sample_image,
    state_index,
    to_tensor,
)
from dapo.synthetic.generator import applicable_defects, make_rng

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
COMPACT_MODEL = "dapo-compact"
COMPACT_CONFIG = ASSETS_DIR / f"{COMPACT_MODEL}.json"
COMPACT_WEIGHTS = ASSETS_DIR / f"{COMPACT_MODEL}.safetensors"
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class PretrainConfig:
    """Hyperparameters of the two-stage pretraining (module docstring).

    Stage 1 (image tower): ``image_steps`` steps at peak ``lr`` after ``warmup_steps``, cosine
    decay to ``min_lr_ratio * lr``. Stage 2 (text tower): ``text_steps`` steps at peak
    ``text_lr``, same shape of schedule; ``text_tunes_last_block``: the text stage also trains
    the last vision block and ``ln_post`` (False: LiT's locked tower). ``precision``:
    ``"bf16"`` autocast (fast on CPUs with AVX-512-BF16/AMX and on GPUs), ``"fp32"``, or
    ``"auto"`` (the machine decides; :mod:`dapo.precision`, as are ``device`` and the autocast).
    ``threads``: CPU threads (2 = the project's reference machine).
    """

    seed: int = 0
    image_steps: int = 3200
    full_per_step: int = 16
    local_images_per_step: int = 16
    lr: float = 1e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    aux_layer: int = 4
    dense_weight: float = 1.0
    text_steps: int = 500
    text_images: int = 16000
    text_batch: int = 256
    text_lr: float = 1e-3
    state_weight: float = 1.0
    text_tunes_last_block: bool = True
    init: str = "mimetic"
    precision: str = "bf16"
    threads: int = 2
    device: str = "auto"
    checkpoint_every: int = 100
    corpus: CorpusSpec = field(default_factory=CorpusSpec)

    @property
    def steps(self) -> int:
        return self.image_steps + self.text_steps

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


def view_tokens(visual: torch.nn.Module, images: torch.Tensor, offsets: torch.Tensor,
                depth: int | None = None) -> torch.Tensor:
    """Tokens ``(B, 1 + patches, width)`` of views (full images or patch-aligned crops) after
    the first ``depth`` vision blocks (all by default; ``ln_post`` not applied): OpenCLIP's ViT
    forward with the positional embeddings of the patches each view shows (offsets in patches)."""
    x = visual.conv1(images)
    batch, width, rows, cols = x.shape
    x = x.flatten(2).transpose(1, 2)
    grid = visual.grid_size[1]
    row_index = offsets[:, :1, None] + torch.arange(rows, device=x.device)[None, :, None]
    col_index = offsets[:, 1:, None] + torch.arange(cols, device=x.device)[None, None, :]
    positions = visual.positional_embedding[1 + (row_index * grid + col_index).flatten(1)]
    cls = (visual.class_embedding + visual.positional_embedding[0]).expand(batch, 1, width)
    x = visual.ln_pre(torch.cat([cls.to(x.dtype), x + positions.to(x.dtype)], dim=1))
    for block in visual.transformer.resblocks[:depth]:
        x = block(x)
    return x


def encode_views(visual: torch.nn.Module, images: torch.Tensor, offsets: torch.Tensor,
                 project: bool = True) -> torch.Tensor:
    """Image embeddings of views (:func:`view_tokens`, class token after ``ln_post``);
    ``project=False`` stops before the final projection ``visual.proj``."""
    x = visual.ln_post(view_tokens(visual, images, offsets))[:, 0]
    return x @ visual.proj if project else x


def last_block_class_token(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Class-token features (after ``ln_post``, before ``visual.proj``) from the tokens that
    enter the last vision block: that block evaluated for the class-token query alone (its
    other outputs feed nothing), which equals the full forward's class token."""
    block = visual.transformer.resblocks[-1]
    hidden = block.ln_1(tokens)
    x = tokens[:, :1] + block.ls_1(block.attn(hidden[:, :1], hidden, hidden, need_weights=False)[0])
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return visual.ln_post(x[:, 0])


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
    state = [IGNORE if len(v.defects) > 1 else state_index(v.defects[0] if v.defects else "normal") for v in views]
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


def state_class_weights(spec: CorpusSpec) -> torch.Tensor:
    """Weights of the state classes (normal + ``DEFECT_ORDER``): 1 for every defect type,
    and for normal the corpus share of an average single-defect type over the normal share,
    so that normal counts as much as one defect type (the held-out evaluation shows every
    state equally often)."""
    single = 1.0 - spec.p_normal - spec.p_two
    weights = torch.ones(1 + len(DEFECT_ORDER))
    weights[0] = single / len(DEFECT_ORDER) / spec.p_normal
    return weights


def step_views(config: PretrainConfig, step: int) -> list[View]:
    """Full and local views of image-tower step ``step`` (a pure function of the seed and the step)."""
    spec, seed = config.corpus, config.seed
    full = [full_view(spec, seed, step * config.full_per_step + j) for j in range(config.full_per_step)]
    local = [v for j in range(config.local_images_per_step)
             for v in local_views(spec, seed, step * config.local_images_per_step + j)]
    return full + local


def state_texts(rng: np.random.Generator, products: list[str], defects: list[tuple[str, ...]],
                policy: CaptionPolicy) -> tuple[list[str], list[int], list[list[int]], list[int]]:
    """Captions of every state (normal or one defect type) of the products of the images
    with at most one defect type. Returns the texts, the indices of those images, per image
    the indices of its candidate texts (one per state of its product), and per image the
    position of its true state among its candidates."""
    texts, rows, scored = [], {}, []
    for index, (product, shown) in enumerate(zip(products, defects)):
        if len(shown) > 1:
            continue
        if product not in rows:
            states = ("normal", *applicable_defects(product))
            rows[product] = {state: len(texts) + k for k, state in enumerate(states)}
            texts += [exact_caption(rng, product_words(product), () if state == "normal" else (state,), policy)
                      for state in states]
        scored.append((index, rows[product], shown[0] if shown else "normal"))
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


def _by_size(views: list[View]) -> list[list[View]]:
    sizes = sorted({v.image.shape[-1] for v in views}, reverse=True)
    return [[v for v in views if v.image.shape[-1] == size] for size in sizes]



class ImageStepViews(torch.utils.data.Dataset):
    """The views of every image-tower step, grouped by size (index = step), so that a
    ``DataLoader`` worker can generate the next steps while the current one trains."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config

    def __len__(self) -> int:
        return self.config.image_steps

    def __getitem__(self, step: int) -> list[list[View]]:
        return _by_size(step_views(self.config, step))


def _keep_as_is(item):
    return item


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


def image_step_loader(config: PretrainConfig, start: int, workers: int) -> torch.utils.data.DataLoader:
    """Steps ``start .. image_steps - 1`` in order; ``workers`` > 0 generates them in
    background processes (the same views, so the same model, as ``workers=0``)."""
    steps = range(start, config.image_steps)
    return torch.utils.data.DataLoader(ImageStepViews(config), batch_size=None, sampler=steps, num_workers=workers,
                                       collate_fn=_keep_as_is, worker_init_fn=_one_thread if workers else None,
                                       prefetch_factor=4 if workers else None, persistent_workers=False)


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


@dataclass
class LockedImages:
    """The text stage's images: what they show and their locked features (class token after
    ``ln_post``, before the trainable projection; with ``text_tunes_last_block`` all tokens
    entering the last vision block)."""

    features: torch.Tensor
    products: list[str]
    defects: list[tuple[str, ...]]


@torch.no_grad()
def locked_features(model, images: list[np.ndarray], batch_size: int = 64, device: str | torch.device = "cpu",
                    precision: str = "fp32", before_last_block: bool = False) -> torch.Tensor:
    """Class-token features after ``ln_post``, before the projection ``visual.proj``,
    ``(N, width)`` float32 (``features @ visual.proj`` is the image embedding): what the text
    stage's trained projection reads. ``before_last_block``: instead the tokens
    ``(N, 1 + patches, width)`` entering the last vision block (:func:`last_block_class_token`
    turns them into the former). ``precision`` as in :class:`PretrainConfig`."""
    device, chunks = torch.device(device), []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([to_tensor(image) for image in images[start:start + batch_size]]).to(device)
        offsets = torch.zeros(len(pixels), 2, dtype=torch.long, device=device)
        with autocast(device, precision):
            if before_last_block:
                chunks.append(view_tokens(model.visual, pixels, offsets, depth=-1).float())
            else:
                chunks.append(encode_views(model.visual, pixels, offsets, project=False).float())
    return torch.cat(chunks)


@torch.no_grad()
def locked_images(model, config: PretrainConfig, device, batch_size: int = 64) -> LockedImages:
    """Generate the ``text_images`` images of the text stage and encode them once."""
    spec, features, products, defects = config.corpus, [], [], []
    for start in tqdm(range(0, config.text_images, batch_size), desc="locked image features", leave=False):
        images = [sample_image(spec, config.seed, TEXT_STREAM, i)[0]
                  for i in range(start, min(start + batch_size, config.text_images))]
        features.append(locked_features(model, [image.image for image in images], batch_size, device,
                                        config.precision, config.text_tunes_last_block))
        products += [image.product for image in images]
        defects += [image.defects for image in images]
    return LockedImages(torch.cat(features), products, defects)


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


def text_stage_parameters(model: torch.nn.Module, last_block: bool = False) -> list[tuple[str, torch.nn.Parameter]]:
    """What the text stage trains: the text tower, the logit scale and ``visual.proj``; with
    ``last_block`` also the last vision block and ``ln_post``."""
    last = f"visual.transformer.resblocks.{len(model.visual.transformer.resblocks) - 1}."
    tuned = ("visual.proj", "visual.ln_post.", last) if last_block else ("visual.proj",)
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("visual.") or n.startswith(tuned)]


LOG_COLUMNS = ("step", "stage", "loss", "product", "state", "dense", "contrastive", "lr", "logit_scale", "seconds")


def pretrain(config: PretrainConfig, run_dir: str | Path, *, output: str | Path = COMPACT_WEIGHTS,
             resume: bool = True, monitor=None, loader_workers: int = 0) -> Path:
    """Train the compact CLIP (both stages) and write its weights to ``output``; returns ``output``.

    ``loader_workers`` processes generate the image stage's views ahead of training (0: in
    the training loop); the model does not depend on it. Worth it beside a GPU; on 2 CPU
    cores the worker competes with training and is slower (``benchmarks/bench_pretrain_loader.py``).

    ``run_dir`` receives ``log.csv`` (one row per step), ``state.pt`` (resumable every
    ``checkpoint_every`` steps and at the end of each stage) and, with
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
        state = torch.load(state_path, map_location=device, weights_only=False)
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
            torch.save({"model": trained.state_dict(), "step": done, "config": asdict(config),
                        "optimizers": {k: o.state_dict() for k, o in optimizers.items()}}, state_path)
            if monitor is not None:
                model.eval()
                _append_csv(run_dir / "eval.csv", {"step": done, "stage": stage, **monitor(model, heads, stage, done)})
    tap.handle.remove()
    model.eval()
    metadata = {"model": COMPACT_MODEL, "config": json.dumps(asdict(config)), "torch": torch.__version__,
                "open_clip": open_clip.__version__, "device": str(device)}
    return save_compact_weights(model, output, metadata)
