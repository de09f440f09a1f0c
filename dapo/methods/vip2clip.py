"""ViP²-CLIP (Yang et al., arXiv 2505.17692): visual-perception prompting with unified
text-patch alignment, on a frozen CLIP.

* **ViP-VCA** (Sec. 4.1, Eq. 2-5): two learned prompts ``[v_1..v_e] good [z_1..z_r]`` and
  ``[w_1..w_e] damaged [z_1..z_r]`` with ``z_i = o_i + a_i``: ``o_i`` generic learned tokens,
  ``a_i = h_i(f)`` from a Meta-Net (Linear-ReLU-Linear, one per token) of the normalised global
  image embedding ``f``. The text encoder therefore runs once per image.
* **ViP-FGP** (Eq. 6): per tapped layer, attention of the two prompt embeddings (queries) over
  that layer's patch embeddings (keys, values), ``G~ = softmax(Q K^T / sqrt(C)) V W_o``.
* **UTPA** (Sec. 4.2, Eq. 7-8): patch maps ``P(g~, f_jk)`` (softmax over normal/abnormal of
  cosines / tau); image level from the Top-K patches of each layer's abnormal map.
* **Training / inference** (Sec. 4.3, Eq. 9-11): CE per layer on the image logits + lambda x
  (focal + two Dice terms) per layer; score = mean over layers of S_a^l; map = mean over
  layers of ``(1 - M_n + M_a) / 2`` (= M_a for a 2-way softmax), Gaussian-smoothed.

Every choice is a :class:`ViP2CLIPConfig` field citing the paper or, where the paper is silent,
the release (github kim0806/ViP2-CLIP at commit 4b5884f6c6bd, read for facts only). The paper's
layers 6, 12, 18, 24 of ViT-L/14 are fractions of depth here, and its Top-K = 50 (of 37 x 37
patches at 518 px) keeps its proportion of the patch grid (:func:`fit_to_backbone`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dapo.methods.contract import AnomalyModel, DAPOOutput, MethodConfig
from dapo.methods.dapo.dpam import frozen_vision_blocks
from dapo.methods.dapo.losses import dice_loss, focal_loss
from dapo.methods.dapo.progressive import run_blocks
from dapo.methods.dapo.prompts import PLACEHOLDER, placeholder_id
from dapo.methods.registry import Method, TrainConfig, register  # TrainConfig: the recipe class the registry uses
from dapo.methods.scoring import stage_probabilities

PAPER = ("Yang et al., ViP²-CLIP: visual-perception prompting with unified alignment for zero-shot anomaly "
         "detection, arXiv 2505.17692")
RELEASE = "github kim0806/ViP2-CLIP @ 4b5884f6c6bd"
IMAGE_POOLING = ("feature", "similarity")
#: The paper's patch grid: ViT-L/14 at 518 px has 37 x 37 patches, of which Top-K = 50 are pooled.
PAPER_PATCHES = 37 * 37
PAPER_TOP_K = 50


@dataclass(frozen=True)
class ViP2CLIPConfig(MethodConfig):
    """ViP²-CLIP's choices (paper = arXiv 2505.17692; release = kim0806/ViP2-CLIP @ 4b5884f).

    n_ctx, n_dynamic:
        Static state tokens e = 7 and image-conditioned tokens r = 3 (paper 5.1 and App. C.1:
        "10 tokens, 3 of which are dynamically conditioned"; release ``train.sh:13-14``).
    normal_word, abnormal_word:
        The state adjectives "good" / "damaged" (paper Eq. 2-3; the release embeds the
        abnormal prompt's tokens for both prompts, ``prompt_learner.py:164``).
    token_init_std:
        v, w, o drawn from N(0, 0.02^2) (release ``prompt_learner.py:130,139-141``; paper silent).
    meta_hidden_ratio:
        Meta-Net hidden width / input width: 384 of 768 (release ``prompt_learner.py:87,143``).
    meta_input_bias:
        A learned N(0, 0.02^2) vector added to f before the Meta-Nets (release
        ``prompt_learner.py:91-96,109``; paper silent).
    fgp_heads, fgp_scaled:
        FGP attention heads and the ``1 / sqrt(d)`` logit scale: one head, scaled (paper Eq. 6);
        the release uses 8 heads and no scale (``prompt_learner.py:230,242,264``).
    fgp_lr_scale:
        The FGP learns at this multiple of the learning rate: 0.01 (release ``train.py:46-49``;
        the paper names one rate, B.1). Realised by storing the FGP weights divided by it (Adam's
        step does not depend on the gradient's scale), so the one-rate trainer needs no change.
    global_ln_post:
        Whether the global embedding f passes ``ln_post`` before the projection: no (release
        ``VIP2CLIP_lib/VIP2CLIP.py:370`` projects the raw class token; paper silent).
    layer_fractions:
        Aligned layers as fractions of the vision depth: 6, 12, 18, 24 of 24 (paper 5.1, B.1).
    top_k:
        Patches pooled per layer for the image level (paper 5.1: 50 at 37 x 37 patches);
        :func:`fit_to_backbone` scales it to the backbone's grid unless set explicitly.
    temperature:
        tau of Eq. 1: 0.07 (release ``train.py:88,99``, ``test.py:93,104``; paper silent).
    image_pooling:
        ``"feature"``: Eq. 8, F_a^l = mean of the Top-K patch embeddings, S^l = P(g~, F_a^l),
        the global loss summed over the layers (Eq. 9) and the score their mean (4.3);
        ``"similarity"``: the release, the mean of the Top-K patches' cosines over all layers,
        one cross-entropy and its softmax as the score (``train.py:92-100``, ``test.py:98-105``).
    lam:
        lambda of Eq. 9: 1 (release ``train.py:103-111`` adds both terms unweighted; paper silent).
    focal_gamma, focal_smooth:
        Focal loss gamma 2 with the released one-hot smoothing 1e-5 (release ``loss.py:21,74-78``).
    smoothing_sigma:
        G_sigma of Eq. 11: 8 px (release ``test.py:205``; paper silent).
    upsample_align_corners:
        Bilinear upsampling without aligned corners (release ``utils.py:28``).
    """

    name: str = "ViP²-CLIP"
    n_ctx: int = 7
    n_dynamic: int = 3
    normal_word: str = "good"
    abnormal_word: str = "damaged"
    token_init_std: float = 0.02
    meta_hidden_ratio: float = 0.5
    meta_input_bias: bool = True
    fgp_heads: int = 1
    fgp_scaled: bool = True
    fgp_lr_scale: float = 0.01
    global_ln_post: bool = False
    layer_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    top_k: int = PAPER_TOP_K
    temperature: float = 0.07
    image_pooling: str = "feature"
    lam: float = 1.0
    focal_gamma: float = 2.0
    focal_smooth: float = 1e-5
    smoothing_sigma: float = 8.0
    upsample_align_corners: bool = False

    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("layer_fractions",)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layer_fractions", tuple(float(f) for f in self.layer_fractions))
        cls = type(self).__name__
        for key in ("n_ctx", "n_dynamic", "top_k", "fgp_heads"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{cls}.{key} must be an integer >= 1, got {value!r}")
        if self.image_pooling not in IMAGE_POOLING:
            raise ValueError(f"{cls}.image_pooling={self.image_pooling!r}: expected one of {IMAGE_POOLING}")
        if not self.layer_fractions or not all(0.0 < f <= 1.0 for f in self.layer_fractions):
            raise ValueError(f"{cls}.layer_fractions must be fractions in (0, 1], got {self.layer_fractions}")
        for key in ("temperature", "fgp_lr_scale", "meta_hidden_ratio", "token_init_std"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{cls}.{key} must be > 0, got {getattr(self, key)}")
        if self.lam < 0:
            raise ValueError(f"{cls}.lam must be >= 0, got {self.lam}")
        if not self.normal_word.strip() or not self.abnormal_word.strip():
            raise ValueError(f"{cls}: normal_word and abnormal_word must be words, got "
                             f"{self.normal_word!r}, {self.abnormal_word!r}")


@dataclass
class ViP2Output(DAPOOutput):
    """:class:`DAPOOutput` plus ``layer_image_logits`` (B, N, 2): S^l of every aligned layer."""

    layer_image_logits: torch.Tensor | None = None


def aligned_layers(n_layers: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """1-based layers at the given fractions of depth (rounded half up): 6, 12, 18, 24 of 24."""
    return tuple(sorted({max(1, math.floor(n_layers * f + 0.5)) for f in fractions}))


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class MetaNet(nn.Module):
    """h_i (Sec. 4.1): r independent Linear-ReLU-Linear maps of f into the token space; (B, C) -> (B, r, D)."""

    def __init__(self, dim_in: int, dim_out: int, n_tokens: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out)) for _ in range(n_tokens))
        with torch.no_grad():  # PyTorch's default Linear bounds, drawn from the seeded generator
            for linear in (m for m in self.modules() if isinstance(m, nn.Linear)):
                bound = linear.in_features ** -0.5
                linear.weight.copy_(_uniform(tuple(linear.weight.shape), bound, generator))
                linear.bias.copy_(_uniform(tuple(linear.bias.shape), bound, generator))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(f) for net in self.nets], dim=1)


class FineGrainedPerception(nn.Module):
    """ViP-FGP (Eq. 6): ``G~ = softmax(Q K^T * s) V W_o`` with Q = G W_q, K = F W_k, V = F W_v.

    Weights are stored divided by ``lr_scale`` and multiplied back in :meth:`linear` (a
    learning-rate multiplier for Adam, see :class:`ViP2CLIPConfig`). Output rows normalised.
    """

    NAMES = ("q", "k", "v", "o")

    def __init__(self, dim: int, heads: int, scaled: bool, lr_scale: float, generator: torch.Generator) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"ViP2CLIPConfig.fgp_heads={heads} must divide the embedding width {dim}")
        self.heads, self.scaled, self.lr_scale = heads, scaled, lr_scale
        bound = dim ** -0.5  # Conv1d(kernel 1) default initialisation bounds (release prompt_learner.py:236-239)
        for name in self.NAMES:
            self.register_parameter(f"{name}_weight", nn.Parameter(_uniform((dim, dim), bound, generator) / lr_scale))
            self.register_parameter(f"{name}_bias", nn.Parameter(_uniform((dim,), bound, generator) / lr_scale))

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The effective map ``x W^T + b`` of projection ``name`` (q, k, v or o)."""
        weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
        return F.linear(x, weight * self.lr_scale, bias * self.lr_scale)

    def forward(self, prompts: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """prompts (B, 2, C), patches (B, N, C) -> layer prompts (B, 2, C), normalised."""
        batch, n_prompts, dim = prompts.shape
        d = dim // self.heads
        q = self.linear("q", prompts).view(batch, n_prompts, self.heads, d).transpose(1, 2)
        k = self.linear("k", patches).view(batch, -1, self.heads, d).transpose(1, 2)
        v = self.linear("v", patches).view(batch, -1, self.heads, d).transpose(1, 2)
        scores = q @ k.transpose(-1, -2)
        if self.scaled:
            scores = scores / math.sqrt(d)
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, n_prompts, dim)
        return F.normalize(self.linear("o", out), dim=-1)


def utpa_layer(patches: torch.Tensor, prompts: torch.Tensor, top_k: int, temperature: float, pooling: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """UTPA at one layer (Eq. 7-8): patch logits (B, N, 2) and the image-level quantity.

    ``patches`` (B, N, C) and ``prompts`` (B, 2, C) normalised. ``pooling="feature"``: the
    logits (B, 2) of P(g~, F_a) with F_a the mean of the Top-K patches by abnormal probability
    (Eq. 8); ``"similarity"``: those patches' cosines (B, K, 2) (the release).
    """
    cosines = torch.einsum("bnc,bsc->bns", patches, prompts)
    logits = cosines / temperature
    k = min(top_k, patches.shape[1])
    index = logits.softmax(dim=-1)[..., 1].topk(k, dim=-1).indices  # (B, K)
    if pooling == "similarity":
        return logits, cosines.gather(1, index.unsqueeze(-1).expand(-1, -1, cosines.shape[-1]))
    pooled = patches.gather(1, index.unsqueeze(-1).expand(-1, -1, patches.shape[-1])).mean(dim=1)
    return logits, torch.einsum("bc,bsc->bs", F.normalize(pooled, dim=-1), prompts) / temperature


class ViP2CLIP(AnomalyModel):
    """ViP²-CLIP on a frozen OpenCLIP ViT (binary: normal vs abnormal, class-name free)."""

    family = "vip2clip"
    config_class = ViP2CLIPConfig

    def __init__(self, backbone, config: ViP2CLIPConfig | None = None) -> None:
        config = config or ViP2CLIPConfig()
        super().__init__(backbone, config)
        device, generator = self.device, self.seeded_generator()
        width, dim = backbone.text_width, backbone.embed_dim
        std = config.token_init_std
        self.ctx_normal = nn.Parameter(torch.randn(config.n_ctx, width, generator=generator) * std)
        self.ctx_abnormal = nn.Parameter(torch.randn(config.n_ctx, width, generator=generator) * std)
        self.generic = nn.Parameter(torch.randn(config.n_dynamic, width, generator=generator) * std)
        self.meta_bias = nn.Parameter(torch.randn(dim, generator=generator) * std) if config.meta_input_bias else None
        hidden = max(1, round(dim * config.meta_hidden_ratio))
        self.meta_net = MetaNet(dim, width, config.n_dynamic, hidden, generator)
        self.fgp = FineGrainedPerception(dim, config.fgp_heads, config.fgp_scaled, config.fgp_lr_scale, generator)
        self.layers = aligned_layers(len(backbone.vision_blocks), config.layer_fractions)
        ids = self._template_ids()
        self.register_buffer("prompt_ids", ids, persistent=False)
        self.to(device)

    # ------------------------------------------------------------------ text side
    def _template_ids(self) -> torch.Tensor:
        """Token ids of ``X*e <word> X*r`` for both states, cut after the longer EOT: (2, L)."""
        config = self.config
        placeholder = placeholder_id(self.backbone.tokenizer)
        dynamic = " ".join([PLACEHOLDER] * config.n_dynamic)
        texts = [" ".join([PLACEHOLDER] * config.n_ctx + [word, dynamic])
                 for word in (config.normal_word, config.abnormal_word)]
        ids = self.backbone.tokenize(texts)
        limit = int(self.backbone.text.positional_embedding.shape[0])
        self._word_lengths = []
        for row, text in zip(ids, texts):
            length = int((row != 0).sum())
            n_word = length - 2 - config.n_ctx - config.n_dynamic
            ctx, dyn = row[1:1 + config.n_ctx], row[1 + config.n_ctx + n_word:length - 1]
            if length > limit or n_word < 1 or not bool((ctx == placeholder).all()) or not bool((dyn == placeholder).all()):
                raise ValueError(f"ViP2CLIPConfig: the prompt {text!r} does not tokenise as {config.n_ctx} + "
                                 f"{config.n_dynamic} placeholders around its state word within {limit} tokens; "
                                 f"use fewer tokens (n_ctx, n_dynamic) or a single-word state adjective")
            self._word_lengths.append(n_word)
        return ids[:, : self.backbone.text_length(ids)]

    def prompt_tokens(self, dynamic: torch.Tensor) -> torch.Tensor:
        """Input sequences (Eq. 4-5) for image-conditioned offsets ``dynamic`` (B, r, D): (B, 2, L, D)."""
        backbone, config = self.backbone, self.config
        ids = self.prompt_ids
        embedded = backbone.text.token_embedding(ids).float()  # (2, L, D)
        batch = dynamic.shape[0]
        rows = []
        for state, (ctx, n_word) in enumerate(zip((self.ctx_normal, self.ctx_abnormal), self._word_lengths)):
            start = 1 + config.n_ctx + n_word
            fixed = embedded[state].unsqueeze(0).expand(batch, -1, -1)
            z = self.generic.unsqueeze(0) + dynamic.float()  # z_i = o_i + a_i
            rows.append(torch.cat([fixed[:, :1], ctx.unsqueeze(0).expand(batch, -1, -1), fixed[:, 1 + config.n_ctx:start],
                                   z, fixed[:, start + config.n_dynamic:]], dim=1))
        x = torch.stack(rows, dim=1)
        return x + backbone.text.positional_embedding[: x.shape[2]].float()

    def encode_prompts(self, image_embedding: torch.Tensor | None) -> torch.Tensor:
        """Normalised prompt embeddings (B, 2, C) [g_n, g_a] for normalised global embeddings (B, C);
        ``None``: the static prompts (z = o, no image conditioning), (1, 2, C)."""
        if image_embedding is None:
            dynamic = torch.zeros(1, self.config.n_dynamic, self.backbone.text_width, device=self.device)
        else:
            f = image_embedding + (self.meta_bias if self.meta_bias is not None else 0.0)
            dynamic = self.meta_net(f)
        x = self.prompt_tokens(dynamic)
        batch, n_states, length, width = x.shape
        mask = self.backbone.text_attn_mask
        mask = mask[:length, :length] if mask is not None else None
        x, _ = run_blocks(self.backbone.text_blocks, x.reshape(batch * n_states, length, width), attn_mask=mask)
        ids = self.prompt_ids.repeat(batch, 1)
        pooled = self.backbone.pool_text(x, ids).float().view(batch, n_states, -1)
        return F.normalize(pooled, dim=-1)

    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None) -> torch.Tensor:
        """The static prompts (z_i = o_i), (2, C). ViP²-CLIP's prompts depend on the image, so
        :meth:`forward` encodes them per image and ignores this; it serves state-embedding plots."""
        return self.encode_prompts(None)[0]

    # ------------------------------------------------------------------ image side
    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Normalised global embedding f (B, C), normalised projected patch embeddings of every
        aligned layer (B, h*w, C) and the grid (h, w). The frozen tower needs no gradient."""
        backbone = self.backbone
        images = images.to(self.device)
        x, tapped = frozen_vision_blocks(backbone, images, dpam_layers=0, taps=self.layers)  # = run_blocks
        proj = backbone.visual.proj
        if self.config.global_ln_post:
            f = backbone.pool_image(x)
        else:
            f = x[:, 0] @ proj.to(x.dtype) if proj is not None else x[:, 0]
        patches = [backbone.patch_tokens(tapped[layer]) for layer in self.layers]
        if proj is not None:
            patches = [p @ proj.to(p.dtype) for p in patches]
        return (F.normalize(f.float(), dim=-1), [F.normalize(p.float(), dim=-1) for p in patches],
                backbone.grid_size(tuple(images.shape[-2:])))

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, vocabulary: Sequence[str] | None = None, *,
                products: Sequence[str] | None = None, text_embeddings: torch.Tensor | None = None) -> ViP2Output:
        """Score ``images`` (B, 3, H, W). ``vocabulary``, ``products`` and ``text_embeddings`` are
        not used: the prompts are class-name free and conditioned on each image."""
        config = self.config
        image_embedding, patches, (h, w) = self.encode_image(images)
        prompts = self.encode_prompts(image_embedding)
        stage_logits, image_terms = [], []
        for layer_patches in patches:
            layer_prompts = self.fgp(prompts, layer_patches).float()
            logits, image_term = utpa_layer(layer_patches, layer_prompts, config.top_k, config.temperature,
                                            config.image_pooling)
            stage_logits.append(logits.transpose(1, 2).reshape(logits.shape[0], 2, h, w))
            image_terms.append(image_term)
        if config.image_pooling == "feature":
            layer_logits = torch.stack(image_terms, dim=1)  # (B, N, 2)
            # log of the mean over layers of S^l (Sec. 4.3): its softmax is that mean
            global_logits = layer_logits.log_softmax(dim=-1).logsumexp(dim=1) - math.log(len(image_terms))
        else:
            layer_logits = None
            global_logits = torch.cat(image_terms, dim=1).mean(dim=1) / config.temperature
        return ViP2Output(global_logits, global_logits, stage_logits, image_embedding, prompts, layer_logits)

    def loss_terms(self, output: ViP2Output, labels: torch.Tensor, type_masks: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """Eq. 9-10: ``global`` (CE of S^l summed over the layers; the release: one CE) and
        ``local`` (focal + Dice(M_a, S) + Dice(M_n, 1 - S) summed over the layers)."""
        config = self.config
        device = output.global_logits.device
        labels = labels.to(device).long()
        masks = (type_masks.to(device) > 0).long()
        if output.layer_image_logits is not None:
            g = sum(F.cross_entropy(output.layer_image_logits[:, i], labels)
                    for i in range(output.layer_image_logits.shape[1]))
        else:
            g = F.cross_entropy(output.global_logits.float(), labels)
        size = tuple(masks.shape[-2:])
        local = output.global_logits.new_zeros(())
        for logits in output.stage_logits:
            probs = stage_probabilities(logits, size, softmax_first=config.softmax_before_upsample,
                                        align_corners=config.upsample_align_corners)
            local = local + focal_loss(probs, masks, config.focal_gamma, config.focal_smooth)
            local = local + dice_loss(probs[:, 1], masks) + dice_loss(probs[:, 0], 1 - masks)
        return {"global": g, "local": local, "total": g + config.lam * local}


def vip2clip() -> ViP2CLIPConfig:
    """ViP²-CLIP: the paper where it states a thing, the release where it is silent."""
    return ViP2CLIPConfig()


def vip2clip_release() -> ViP2CLIPConfig:
    """ViP²-CLIP as the release runs it: 8 unscaled FGP heads, Top-K cosines averaged over all
    layers into one image logit pair, and "damaged" in both prompts (``prompt_learner.py:164``)."""
    return ViP2CLIPConfig(name="ViP²-CLIP (release)", fgp_heads=8, fgp_scaled=False, image_pooling="similarity",
                          normal_word="damaged")


def vip2clip_recipe() -> TrainConfig:
    """Adam, lr 1e-3, batch 8, 10 epochs (paper B.1); PyTorch's default betas (release
    ``train.py:46``); every auxiliary image kept (the release trains on whole test splits)."""
    return TrainConfig(lr=1e-3, betas=(0.9, 0.999), batch_size=8, epochs=10, multi_defect="as_class")


def scaled_top_k(backbone, top_k: int = PAPER_TOP_K) -> int:
    """Top-K at the backbone's patch grid keeping the paper's share of 50 of 37 x 37 patches."""
    h, w = backbone.grid_size()
    return max(1, math.floor(top_k * h * w / PAPER_PATCHES + 0.5))


def fit_to_backbone(config: ViP2CLIPConfig, backbone, overrides: dict) -> ViP2CLIPConfig:
    """Scale Top-K to the backbone's grid (50 at ViT-L/14, 518 px) unless ``top_k`` is given."""
    if "top_k" in overrides:
        return config
    return config.with_overrides(top_k=scaled_top_k(backbone, config.top_k))


register(Method("vip2clip", ViP2CLIP, vip2clip, vip2clip_recipe, paper=PAPER, fit=fit_to_backbone))
register(Method("vip2clip_release", ViP2CLIP, vip2clip_release, vip2clip_recipe, paper=PAPER, fit=fit_to_backbone))
