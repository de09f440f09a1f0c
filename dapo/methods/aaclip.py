"""AA-CLIP (Ma et al., CVPR 2025, arXiv 2503.06661): anomaly-aware CLIP by residual adapters in
both encoders, trained in two stages. Released code: github Mwxinnn/AA-CLIP at commit 53db195f2304
(read for facts only; the paper itself is not in ``shared/papers``).

* **Residual adapters** (``model/adapter.py:27-145``): after each of the first layers of an
  encoder, ``x <- w a + (1 - w) x`` with ``a = LeakyReLU(W x)`` rescaled to the norm of ``x``
  (w = 0.1; 3 of 12 text layers, 6 of 24 vision layers). The text tower's projection is replaced
  by a learned ``LeakyReLU(W .)``; the patch tokens of four layers (6, 12, 18, 24) pass
  ``ln_post`` and their own learned projection (``seg_proj``), the last layer's also a detection
  projection whose normalised tokens are averaged into the image feature (``det_proj``).
* **Prompts** (``dataset/constants.py:135-148``, ``forward_utils.py:138-162``): normal and
  abnormal state phrases with the product name in two templates, each embedding normalised,
  averaged per state and normalised again.
* **Stage 1, text** (``train.py:38-114``): the text adapters learn from the segmentation loss of
  frozen CLIP's patches (V-V attention in the last 19 layers, plus the image's class embedding)
  against the adapted text, plus 0.1 x the squared cosine of the normal and abnormal anchors
  (the disentanglement loss).
* **Stage 2, image** (``train.py:117-174``): the vision adapters and projections learn from the
  cross-entropy of the detection feature against the (fixed) anchors plus the segmentation loss
  (focal + two Dice terms) of every level.

The shared trainer runs one loop with one optimiser: ``stage="joint"`` (the registry's ``aaclip``)
adds both stages' losses in every step (each adapter gets gradients from its own stage's terms
only); :func:`train_two_stage` runs the release's order, stage 1 then stage 2, with their recipes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from dapo.clip.backbone import is_causal_mask, prepared_blocks
from dapo.methods.contract import AnomalyModel, DAPOOutput, MethodConfig
from dapo.methods.dapo.dpam import OFFICIAL_DPAM_LAYERS, OFFICIAL_VISION_LAYERS, scaled_dpam_layers, vv_attention
from dapo.methods.dapo.losses import dice_loss, focal_loss
from dapo.methods.dapo.progressive import run_blocks
from dapo.methods.registry import Method, TrainConfig, register  # TrainConfig: the recipe class the registry uses
from dapo.methods.scoring import stage_probabilities
from dapo.util.precision import compute_dtype

PAPER = ("Ma et al., AA-CLIP: enhancing zero-shot anomaly detection via anomaly-aware CLIP, CVPR 2025 "
         "(arXiv 2503.06661)")
RELEASE = "github Mwxinnn/AA-CLIP @ 53db195f2304"
STAGES = ("joint", "text", "image")
TEXT_LOSS_LAYERS = ("last", "all")


@dataclass(frozen=True)
class AACLIPConfig(MethodConfig):
    """AA-CLIP's choices, from the release (Mwxinnn/AA-CLIP @ 53db195f2304; the paper is not readable here).

    stage:
        What a training step optimises: ``"text"`` (stage 1), ``"image"`` (stage 2, the text
        side fixed) or ``"joint"`` (both stages' losses in one step, for the one-loop trainer).
    normal_states, abnormal_states, templates:
        ``dataset/constants.py:135-148``.
    object_word:
        The name used without a product (``forward_utils.py:139-140``: class name ``"object"``).
    text_adapt_fraction, image_adapt_fraction:
        Adapted layers as a share of depth: 3 of 12 text, 6 of 24 vision layers (``train.py:214-215``).
    text_adapt_weight, image_adapt_weight:
        w of the residual mix: 0.1 (``train.py:212-213``).
    leaky_slope:
        The adapters' LeakyReLU slope: PyTorch's default 0.01 (``model/adapter_modules.py:9,20``).
    proj_relu:
        LeakyReLU after ``seg_proj``/``det_proj``: off (``train.py:188`` is a flag ``scripts.sh``
        does not pass); the text projection always has it (``model/adapter.py:43``).
    layer_fractions:
        Levels 6, 12, 18, 24 of 24 as fractions of depth (``model/adapter.py:14``).
    temperature:
        Patch-map logits are 100 x the cosine (``forward_utils.py:199``).
    det_temperature:
        The detection cross-entropy takes the raw cosines (``train.py:148-150``): 1.
    softmax_before_upsample, upsample_align_corners:
        Logits upsampled (bilinear, aligned corners) before the softmax (``forward_utils.py:211-215``).
    dpam_layers:
        Stage 1's frozen CLIP uses V-V attention in its last 19 of 24 layers (``train.py:187,243``);
        scaled to other depths by :func:`fit_to_backbone`.
    text_loss_layers:
        ``"last"``: stage 1's segmentation loss of the last level only, as the release's loop
        keeps (``train.py:87-96`` reassigns ``loss`` per level); ``"all"``: summed over the levels.
    disentangle_weight:
        Weight of the squared normal-abnormal cosine in stage 1 (``train.py:91-96,211``).
    text_lr_scale:
        Text adapters learn at this multiple of the recipe's rate: 1e-5 / 5e-4 (``train.py:202-203``),
        realised by storing them divided by it (Adam's step ignores the gradient's scale).
    focal_gamma, focal_smooth:
        2 and 1e-5 (``forward_utils.py:35-43``).
    smoothing_sigma:
        The release blurs the patch-level map with sigma = 1 patch (kernel 7, industrial,
        ``forward_utils.py:205-210``); here the pixel map with sigma = 1 patch in pixels (14 at
        ViT-L/14; :func:`fit_to_backbone` sets it to the backbone's patch size).
    image_score_global_weight:
        ``0.5 max(map) + 0.5 detection`` for industrial data (``forward_utils.py:250-252``).
    """

    name: str = "AA-CLIP"
    stage: str = "joint"
    normal_states: tuple[str, ...] = ("{}", "a {}", "the {}")
    abnormal_states: tuple[str, ...] = ("a damaged {}", "a broken {}", "a {} with flaw", "a {} with defect",
                                        "a {} with damage")
    templates: tuple[str, ...] = ("{}.", "a photo of {}.")
    object_word: str = "object"
    text_adapt_fraction: float = 0.25
    image_adapt_fraction: float = 0.25
    text_adapt_weight: float = 0.1
    image_adapt_weight: float = 0.1
    leaky_slope: float = 0.01
    proj_relu: bool = False
    layer_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    temperature: float = 0.01
    det_temperature: float = 1.0
    softmax_before_upsample: bool = False
    upsample_align_corners: bool = True
    dpam_layers: int = OFFICIAL_DPAM_LAYERS
    text_loss_layers: str = "last"
    disentangle_weight: float = 0.1
    text_lr_scale: float = 0.02
    focal_gamma: float = 2.0
    focal_smooth: float = 1e-5
    smoothing_sigma: float = 14.0
    image_score_global_weight: float = 0.5

    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("normal_states", "abnormal_states", "templates", "layer_fractions")

    def __post_init__(self) -> None:
        super().__post_init__()
        cls = type(self).__name__
        for key in self.TUPLE_FIELDS:
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if self.stage not in STAGES:
            raise ValueError(f"{cls}.stage={self.stage!r}: expected one of {STAGES}")
        if self.text_loss_layers not in TEXT_LOSS_LAYERS:
            raise ValueError(f"{cls}.text_loss_layers={self.text_loss_layers!r}: expected one of {TEXT_LOSS_LAYERS}")
        for key in ("normal_states", "abnormal_states", "templates"):
            if not getattr(self, key) or not all("{}" in t for t in getattr(self, key)):
                raise ValueError(f"{cls}.{key} must be a non-empty list of phrases with a '{{}}' slot")
        for key in ("text_adapt_fraction", "image_adapt_fraction", "text_adapt_weight", "image_adapt_weight"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{cls}.{key} must lie in [0, 1], got {getattr(self, key)}")
        if not self.layer_fractions or not all(0.0 < f <= 1.0 for f in self.layer_fractions):
            raise ValueError(f"{cls}.layer_fractions must be fractions in (0, 1], got {self.layer_fractions}")
        for key in ("temperature", "det_temperature", "text_lr_scale"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{cls}.{key} must be > 0, got {getattr(self, key)}")
        if self.dpam_layers < 0:
            raise ValueError(f"{cls}.dpam_layers must be >= 0, got {self.dpam_layers}")


@dataclass
class AAOutput(DAPOOutput):
    """:class:`DAPOOutput` plus stage 1's maps: frozen CLIP's patches (+ class embedding) against the
    adapted anchors, (B, 2, h, w) per level (only while training a text stage)."""

    text_stage_logits: list[torch.Tensor] | None = None


def adapted_count(n_layers: int, fraction: float) -> int:
    """Adapted layers for a share of depth (round half up): 3 of 12, 6 of 24."""
    return min(n_layers, math.floor(n_layers * fraction + 0.5))


def xavier(shape: tuple[int, int], generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """``nn.init.xavier_uniform_`` from a seeded generator, divided by ``scale`` (a stored, rate-scaled weight)."""
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return torch.empty(shape).uniform_(-bound, bound, generator=generator) / scale


class ScaledLinears(nn.Module):
    """Bias-free linear maps whose weights are stored divided by ``scale`` (a learning-rate multiplier)."""

    def __init__(self, shapes: Sequence[tuple[int, int]], generator: torch.Generator, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.weights = nn.ParameterList(nn.Parameter(xavier(shape, generator, scale)) for shape in shapes)

    def weight(self, index: int) -> torch.Tensor:
        return self.weights[index] * self.scale

    def __len__(self) -> int:
        return len(self.weights)


def residual_adapt(x: torch.Tensor, weight: torch.Tensor, w: float, slope: float) -> torch.Tensor:
    """``w a + (1 - w) x`` with ``a = LeakyReLU(x W^T)`` rescaled token-wise to ``|x|`` (``model/adapter.py:92-99``)."""
    x32 = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)  # float32 unless float64
    a = F.leaky_relu(F.linear(x32, weight.to(x32.dtype)), slope)
    a = a * x32.norm(dim=-1, keepdim=True) / a.norm(dim=-1, keepdim=True)
    return (w * a + (1.0 - w) * x32).to(x.dtype)


def run_adapted(blocks: nn.ModuleList, x: torch.Tensor, adapters: ScaledLinears, w: float, slope: float, *,
                attn_mask: torch.Tensor | None = None, taps: Sequence[int] = ()) -> tuple[torch.Tensor, dict]:
    """Frozen blocks with a residual adapter after each of the first ``len(adapters)`` layers."""
    taps, tapped = set(taps), {}
    dtype = compute_dtype(x)
    prepared = prepared_blocks(blocks, dtype)
    causal = is_causal_mask(attn_mask)
    mask = None if causal or attn_mask is None else attn_mask.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(dtype)
        for layer in range(1, len(blocks) + 1):
            if prepared is not None:
                x = prepared[layer - 1](x, mask, causal)
            else:
                x = blocks[layer - 1](x, attn_mask=attn_mask)
            if layer <= len(adapters):
                x = residual_adapt(x, adapters.weight(layer - 1), w, slope)
            if layer in taps:
                tapped[layer] = x
    return x, tapped


class AACLIP(AnomalyModel):
    """AA-CLIP on a frozen OpenCLIP ViT (binary; prompts name the product)."""

    family = "aaclip"
    config_class = AACLIPConfig

    def __init__(self, backbone, config: AACLIPConfig | None = None) -> None:
        config = config or AACLIPConfig()
        super().__init__(backbone, config)
        device, generator = self.device, self.seeded_generator()
        t_width, v_width, dim = backbone.text_width, backbone.vision_width, backbone.embed_dim
        n_text = adapted_count(len(backbone.text_blocks), config.text_adapt_fraction)
        n_image = adapted_count(len(backbone.vision_blocks), config.image_adapt_fraction)
        n_vision = len(backbone.vision_blocks)
        self.levels = tuple(sorted({max(1, math.floor(n_vision * f + 0.5)) for f in config.layer_fractions}))
        if config.dpam_layers > n_vision:
            raise ValueError(f"AACLIPConfig.dpam_layers={config.dpam_layers} exceeds the vision tower's {n_vision} layers")
        scale = config.text_lr_scale
        self.text_adapters = ScaledLinears([(t_width, t_width)] * n_text, generator, scale)
        self.text_proj = ScaledLinears([(dim, t_width)], generator, scale)
        self.image_adapters = ScaledLinears([(v_width, v_width)] * n_image, generator)
        self.seg_proj = ScaledLinears([(dim, v_width)] * len(self.levels), generator)
        self.det_proj = ScaledLinears([(dim, v_width)], generator)
        self._ids_cache: dict[str, torch.Tensor] = {}
        self.to(device)

    @property
    def uses_product_names(self) -> bool:
        return True

    # ------------------------------------------------------------------ text side
    def _ids(self, name: str) -> torch.Tensor:
        """Token ids of every prompt of a product: normal ones first (cached)."""
        if name not in self._ids_cache:
            config = self.config
            texts = [t.format(s.format(name)) for states in (config.normal_states, config.abnormal_states)
                     for s in states for t in config.templates]
            self._ids_cache[name] = self.backbone.tokenize(texts)
        return self._ids_cache[name]

    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None) -> torch.Tensor:
        """The two anchors (2, C) [normal, abnormal] of ``product`` (``object_word`` without one)."""
        backbone, config = self.backbone, self.config
        ids = self._ids((product or config.object_word).replace("_", " "))
        ids = ids[:, : backbone.text_length(ids)].to(self.device)
        x = backbone.embed_text(ids)
        mask = backbone.text_attn_mask
        mask = mask[: ids.shape[1], : ids.shape[1]] if mask is not None else None
        x, _ = run_adapted(backbone.text_blocks, x, self.text_adapters, config.text_adapt_weight, config.leaky_slope,
                           attn_mask=mask)
        pooled = text_global_pool(backbone.text.ln_final(x), ids, backbone.text_pool_type,
                                  eos_token_id=backbone.text_eos_id).float()
        embeddings = F.normalize(F.leaky_relu(F.linear(pooled, self.text_proj.weight(0)), config.leaky_slope), dim=-1)
        n_normal = len(config.normal_states) * len(config.templates)
        states = [embeddings[:n_normal].mean(0), embeddings[n_normal:].mean(0)]
        return F.normalize(torch.stack(states), dim=-1)

    def _batch_text(self, products: Sequence[str] | None, batch: int) -> torch.Tensor:
        """Anchors per image (B, 2, C), one text pass per distinct product."""
        names = list(products) if products is not None else [None] * batch
        anchors = {name: self.encode_text((), name) for name in dict.fromkeys(names)}
        return torch.stack([anchors[name] for name in names])

    # ------------------------------------------------------------------ image side
    def encode_image(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, tuple[int, int]]:
        """Adapted vision: normalised level embeddings (B, h*w, C) and the detection feature (B, C)."""
        backbone, config = self.backbone, self.config
        x = backbone.embed_image(images.to(self.device))
        _, tapped = run_adapted(backbone.vision_blocks, x, self.image_adapters, config.image_adapt_weight,
                                config.leaky_slope, taps=self.levels)
        tokens = [backbone.patch_tokens(tapped[level]).float() for level in self.levels]
        seg = [F.normalize(self._project(t, self.seg_proj.weight(i)), dim=-1) for i, t in enumerate(tokens)]
        det = F.normalize(self._project(tokens[-1], self.det_proj.weight(0)), dim=-1).mean(dim=1)
        return seg, det, backbone.grid_size(tuple(images.shape[-2:]))

    def _project(self, tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        out = F.linear(tokens, weight)
        return F.leaky_relu(out, self.config.leaky_slope) if self.config.proj_relu else out

    @torch.no_grad()
    def frozen_patches(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Stage 1's image side (``train.py:74-85``): frozen CLIP with V-V attention in its last
        ``dpam_layers`` layers; every level's patches through ``ln_post`` and the projection,
        normalised, plus the normalised class embedding of plain CLIP: (B, h*w, C) per level."""
        backbone, config = self.backbone, self.config
        blocks = backbone.vision_blocks
        first = len(blocks) - config.dpam_layers + 1
        x = backbone.embed_image(images.to(self.device))
        plain, _ = run_blocks(blocks, x)
        cls = F.normalize(backbone.pool_image(plain).float(), dim=-1)
        wanted = self.levels[-1:] if config.text_loss_layers == "last" else self.levels
        tapped = {}
        for layer, block in enumerate(blocks, start=1):
            if layer >= first:  # the surgery block: v-v attention instead of q-k, MLP kept
                x = x + vv_attention(block, block.ln_1(x))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            else:
                x = block(x)
            if layer in wanted:
                tapped[layer] = x
        proj = backbone.visual.proj
        out = []
        for layer in wanted:
            p = backbone.patch_tokens(tapped[layer])
            p = (p @ proj.to(p.dtype) if proj is not None else p).float()
            out.append(F.normalize(p, dim=-1) + cls.unsqueeze(1))
        return out

    # ------------------------------------------------------------------ forward and loss
    def _maps(self, patches: Sequence[torch.Tensor], text: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
        equation = "bnc,kc->bkn" if text.dim() == 2 else "bnc,bkc->bkn"
        return [torch.einsum(equation, p, text).reshape(p.shape[0], -1, h, w) / self.config.temperature
                for p in patches]

    def forward(self, images: torch.Tensor, vocabulary: Sequence[str] | None = None, *,
                products: Sequence[str] | None = None, text_embeddings: torch.Tensor | None = None) -> AAOutput:
        """Score ``images``; ``text_embeddings`` (2, C) or (B, 2, C) skip the text encoder, else
        ``products`` name each image's product (``object_word`` without)."""
        config = self.config
        training_text = torch.is_grad_enabled() and text_embeddings is None and config.stage != "image"
        if text_embeddings is None:
            with torch.set_grad_enabled(training_text):
                text_embeddings = self._batch_text(products, images.shape[0])
        text = text_embeddings.to(self.device, torch.float32)
        seg, det, (h, w) = self.encode_image(images)
        fixed = text.detach()
        equation = "bc,kc->bk" if text.dim() == 2 else "bc,bkc->bk"
        global_logits = torch.einsum(equation, det, fixed) / config.det_temperature
        stage_logits = self._maps(seg, fixed, h, w)
        text_stage = self._maps(self.frozen_patches(images), text, h, w) if training_text else None
        return AAOutput(global_logits, global_logits, stage_logits, F.normalize(det, dim=-1), text, text_stage)

    def _segmentation(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        config = self.config
        probs = stage_probabilities(logits, tuple(masks.shape[-2:]), softmax_first=config.softmax_before_upsample,
                                    align_corners=config.upsample_align_corners)
        return (focal_loss(probs, masks, config.focal_gamma, config.focal_smooth)
                + dice_loss(probs[:, 0], 1 - masks) + dice_loss(probs[:, 1], masks))

    def loss_terms(self, output: AAOutput, labels: torch.Tensor, type_masks: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """``global``: the detection cross-entropy (stage 2); ``local``: stage 2's segmentation
        loss summed over the levels; ``text``: stage 1's segmentation loss + the weighted squared
        cosine of the anchors; ``total`` adds the terms of ``config.stage``."""
        config = self.config
        device = output.global_logits.device
        labels, masks = labels.to(device).long(), (type_masks.to(device) > 0).long()
        zero = output.global_logits.new_zeros(())
        g = F.cross_entropy(output.global_logits.float(), labels)
        local = sum((self._segmentation(logits, masks) for logits in output.stage_logits), zero)
        text = zero
        if config.stage != "image":
            if output.text_stage_logits is None:
                raise ValueError("AA-CLIP's text stage needs the output of a training forward pass without "
                                 "text_embeddings (stage 1's maps are missing)")
            text = sum((self._segmentation(logits, masks) for logits in output.text_stage_logits), zero)
            anchors = output.text_embeddings if output.text_embeddings.dim() == 3 else output.text_embeddings[None]
            text = text + config.disentangle_weight * (anchors[:, 0] * anchors[:, 1]).sum(-1).mean() ** 2
        if config.stage == "text":
            total = text
        elif config.stage == "image":
            total = g + local
        else:
            total = g + local + text
        return {"global": g, "local": local, "text": text, "total": total}


def aaclip() -> AACLIPConfig:
    """AA-CLIP for the shared one-loop trainer: both stages' losses in every step."""
    return AACLIPConfig()


def aaclip_recipe() -> TrainConfig:
    """Stage 2's recipe (``train.py:199-203, 268-272``): Adam lr 5e-4, betas (0.5, 0.999), batch 2,
    20 epochs; the text adapters' rate is 1e-5 through ``text_lr_scale``."""
    return TrainConfig(lr=5e-4, betas=(0.5, 0.999), batch_size=2, epochs=20, multi_defect="as_class")


def text_stage_recipe() -> TrainConfig:
    """Stage 1's recipe (``train.py:198-202, 263-267``): batch 16, 5 epochs, lr 1e-5 (5e-4 x ``text_lr_scale``)."""
    return aaclip_recipe().with_overrides(batch_size=16, epochs=5)


def fit_to_backbone(config: AACLIPConfig, backbone, overrides: dict) -> AACLIPConfig:
    """Stage 1's V-V layers keep their share of depth (19 of 24) and the map's blur its size of one
    patch, unless ``dpam_layers`` / ``smoothing_sigma`` are given."""
    n_layers = len(backbone.vision_blocks)
    if "dpam_layers" not in overrides and n_layers != OFFICIAL_VISION_LAYERS:
        config = config.with_overrides(dpam_layers=scaled_dpam_layers(n_layers, config.dpam_layers))
    if "smoothing_sigma" not in overrides:
        config = config.with_overrides(smoothing_sigma=float(backbone.patch_size[0]))
    return config


register(Method("aaclip", AACLIP, aaclip, aaclip_recipe, paper=PAPER, fit=fit_to_backbone))
