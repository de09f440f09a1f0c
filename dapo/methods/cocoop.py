"""CoCoOp (Zhou et al., CVPR 2022, "Conditional Prompt Learning for Vision-Language Models"),
adapted to zero-shot anomaly detection as the ZSAD papers run it (binary).

Release read for facts: github KaiyangZhou/CoOp at commit ff61507c (``trainers/cocoop.py``,
``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml``). The ZSAD adaptation (FAPrompt
appendix B.2, MultiADS appendix on CoOp/CoCoOp, DAPO appendix): CoOp's class prompts become two
state prompts sharing one learnable context, ``[V_1..V_M] normal [cls].`` and
``[V_1..V_M] anomalous [cls].``; CoCoOp adds a meta-network ``h`` (Linear-ReLU-Linear, hidden
width ``vis_dim / 16``) that maps the normalised image embedding ``z_x`` to a bias
``pi = h(z_x)`` added to every context token: ``V_m(x) = V_m + pi``. The text side therefore
depends on the image: the text encoder runs once per batch on all ``B x 2`` prompts.

Scores: global ``logit_scale * cos(z_x, t_s(x))`` over the two states (CoCoOp's logits);
segmentation ``logit_scale * cos(p_ij, t_s(x))`` of projected patch tokens at the backbone's
tap layers (see :class:`CoCoOpConfig`). Loss: cross-entropy on the image label
(``trainers/cocoop.py:192``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from dapo.clip.vocabulary import check_prompts_fit, check_vocabulary, context_length, token_count
from dapo.methods.contract import AnomalyModel, DAPOOutput, MethodConfig
from dapo.methods.dapo.dpam import (
    OFFICIAL_DPAM_LAYERS,
    OFFICIAL_VISION_LAYERS,
    frozen_vision_blocks,
    scaled_dpam_layers,
)
from dapo.methods.dapo.losses import global_loss, local_loss
from dapo.methods.dapo.progressive import run_blocks
from dapo.methods.recipe import TrainConfig
from dapo.methods.registry import Method, register

CLASS_NAMES = ("product", "object")


@dataclass(frozen=True)
class CoCoOpConfig(MethodConfig):
    """CoCoOp for ZSAD; every field cites its source.

    n_ctx, ctx_init:
        4 context tokens initialised from the token embeddings of "a photo of a"
        (``vit_b16_c4_ep10_batch1_ctxv1.yaml``: ``N_CTX: 4``, ``CTX_INIT: "a photo of a"``; the
        release sets ``n_ctx`` to the word count of ``ctx_init``, ``cocoop.py:78``). ``ctx_init=""``
        draws N(0, 0.02^2) context (``cocoop.py:86-87``). FAPrompt's count (appendix Table 3:
        83,760 at ViT-L/14) matches 12 random context tokens (``n_ctx=12, ctx_init=""``), the
        CoOp context of AnomalyCLIP's CoOp baseline.
    meta_reduction:
        Hidden width of the meta-network = ``vis_dim // meta_reduction`` (``cocoop.py:95-99``: 16).
    normal_word, abnormal_word:
        State words of the two prompts, ``[V] normal [cls].`` / ``[V] anomalous [cls].`` (MultiADS
        appendix, CoOp in ZSAD after AnomalyCLIP; FAPrompt B.2 for CoCoOp).
    class_name:
        ``"product"``: ``[cls]`` is the product name (CoCoOp's class name; ``_`` and ``-`` become
        spaces, ``cocoop.py:104``); ``"object"``: object-agnostic ``object_word`` (AnomalyCLIP's
        choice). Without a product name ``object_word`` is used.
    dpam_layers:
        The patch maps come from AnomalyCLIP's v-v (DPAM) path over the last 19 of ViT-L/14's 24
        layers (scaled to other depths): FAPrompt runs its baselines "following the setup of
        AnomalyCLIP" (appendix B.2) and its CoCoOp maps localise (pixel AUROC on MVTec-AD carpet
        96.7, appendix Table 9) where the q-k maps of AnomalyCLIP's CoOp numbers are inverted
        (6.7). 0 = plain q-k patch tokens. The global embedding always takes the original path.
    patch_ln_post:
        Patch tokens go through the frozen ``ln_post`` and projection into the joint space
        (CLIP's own path for the class token; AnomalyCLIP ``test.py``). The taps are the
        backbone's ``tap_layers`` (6, 12, 18, 24 of ViT-L/14: AnomalyCLIP's ``features_list``).
    lam:
        Weight of AnomalyCLIP's local loss (focal + Dice on the maps, ``train.py:82-104``) added
        to the cross-entropy. 0 (default): CoCoOp's loss alone (``cocoop.py:192``; FAPrompt B.2:
        "all other parameters remain consistent with those specified in their original papers").
    smoothing_sigma, upsample_align_corners, image_score_global_weight:
        AnomalyCLIP's evaluation (``test.py``: sigma 4, ``align_corners=False``, image score =
        the global score).
    """

    name: str = "CoCoOp"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    meta_reduction: int = 16
    normal_word: str = "normal"
    abnormal_word: str = "anomalous"
    class_name: str = "product"
    object_word: str = "object"
    dpam_layers: int = OFFICIAL_DPAM_LAYERS
    patch_ln_post: bool = True
    lam: float = 0.0
    smoothing_sigma: float = 4.0
    upsample_align_corners: bool = False
    image_score_global_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_ctx < 1:
            raise ValueError(f"CoCoOpConfig.n_ctx must be >= 1, got {self.n_ctx}")
        if self.ctx_init and len(self.ctx_init.split()) != self.n_ctx:
            raise ValueError(f"CoCoOpConfig.ctx_init={self.ctx_init!r} has {len(self.ctx_init.split())} words but "
                             f"n_ctx={self.n_ctx}: give as many context tokens as words (or ctx_init='' for random)")
        if self.meta_reduction < 1:
            raise ValueError(f"CoCoOpConfig.meta_reduction must be >= 1, got {self.meta_reduction}")
        if self.class_name not in CLASS_NAMES:
            raise ValueError(f"CoCoOpConfig.class_name={self.class_name!r}: expected one of {CLASS_NAMES}")
        if self.lam < 0:
            raise ValueError(f"CoCoOpConfig.lam must be >= 0, got {self.lam}")
        if self.dpam_layers < 0:
            raise ValueError(f"CoCoOpConfig.dpam_layers must be >= 0, got {self.dpam_layers}")


@dataclass(frozen=True)
class PromptIds:
    """What :meth:`CoCoOp.encode_text` can cache: the token ids of the two state prompts (2, L).

    The embeddings themselves depend on the image (the meta-network's bias), so ``forward``
    finishes them. ``float()`` returns the object unchanged (``Predictor`` calls it on the text side).
    """

    ids: torch.Tensor

    def float(self) -> PromptIds:
        return self


def seeded_linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default initialisation bounds (weight and bias
    U(+-1/sqrt(in_features))) drawn from a seeded generator."""
    layer = nn.Linear(in_features, out_features)
    bound = in_features ** -0.5
    with torch.no_grad():
        layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
        layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=generator))
    return layer


def project_patches(backbone, tokens: torch.Tensor, ln_post: bool) -> torch.Tensor:
    """Patch tokens of a tapped layer in the joint space (frozen ``ln_post`` and projection), normalised."""
    patches = backbone.patch_tokens(tokens, ln_post=ln_post)
    projection = backbone.visual.proj
    if projection is not None:
        patches = patches @ projection.to(patches.dtype)
    return F.normalize(patches.float(), dim=-1)


class CoCoOp(AnomalyModel):
    """CoCoOp on a frozen OpenCLIP ViT: learnable context + meta-network (binary)."""

    family = "cocoop"
    config_class = CoCoOpConfig

    def __init__(self, backbone, config: CoCoOpConfig | None = None) -> None:
        config = config or CoCoOpConfig()
        super().__init__(backbone, config)
        device, generator = self.device, self.seeded_generator()
        if config.dpam_layers > len(backbone.vision_blocks):
            raise ValueError(f"CoCoOpConfig.dpam_layers={config.dpam_layers} exceeds the vision tower's "
                             f"{len(backbone.vision_blocks)} layers")
        vis_dim, ctx_dim = backbone.embed_dim, backbone.text_width
        hidden = vis_dim // config.meta_reduction
        if hidden < 1:
            raise ValueError(f"CoCoOpConfig.meta_reduction={config.meta_reduction} leaves no hidden unit for an "
                             f"image embedding of width {vis_dim}")
        self.ctx = nn.Parameter(self._initial_context(generator))
        self.meta_net = nn.Sequential(seeded_linear(vis_dim, hidden, generator), nn.ReLU(),
                                      seeded_linear(hidden, ctx_dim, generator))
        self._ids_cache: dict[str, torch.Tensor] = {}
        self.to(device)

    def _initial_context(self, generator: torch.Generator) -> torch.Tensor:
        """(n_ctx, width): the token embeddings of ``ctx_init`` (``cocoop.py:75-83``) or N(0, 0.02^2)."""
        config, backbone = self.config, self.backbone
        if not config.ctx_init:
            return torch.randn(config.n_ctx, backbone.text_width, generator=generator) * 0.02
        needed = token_count(backbone.tokenizer, config.ctx_init) - 2
        if needed != config.n_ctx:
            raise ValueError(f"CoCoOpConfig.ctx_init={config.ctx_init!r} is {needed} tokens, not n_ctx={config.n_ctx}: "
                             f"use words of one token each, or ctx_init='' for random context")
        ids = backbone.tokenize([config.ctx_init]).to(backbone.text.token_embedding.weight.device)
        with torch.no_grad():
            return backbone.text.token_embedding(ids)[0, 1:1 + config.n_ctx].detach().float().cpu().clone()

    # ------------------------------------------------------------------ properties
    @property
    def uses_product_names(self) -> bool:
        """``[cls]`` is the product name unless the prompts are object-agnostic."""
        return self.config.class_name == "product"

    @property
    def logit_scale(self) -> float:
        """CLIP's learned scale (``cocoop.py:176``: ``logit_scale.exp()``)."""
        return self.backbone.logit_scale

    # ------------------------------------------------------------------ text side
    def class_word(self, product: str | None) -> str:
        """``[cls]`` for a product (``object_word`` when object-agnostic or unnamed)."""
        if self.config.class_name == "object" or not product:
            return self.config.object_word
        return product.replace("_", " ").replace("-", " ")

    def prompt_texts(self, product: str | None) -> list[str]:
        """The two state prompts, context placeholders first (``cocoop.py:106``: ``prefix + " " + name + "."``)."""
        config = self.config
        prefix = config.ctx_init or " ".join(["X"] * config.n_ctx)
        name = self.class_word(product)
        return [f"{prefix} {config.normal_word} {name}.".replace("  ", " "),
                f"{prefix} {config.abnormal_word} {name}.".replace("  ", " ")]

    def prompt_ids(self, product: str | None) -> torch.Tensor:
        """Token ids (2, L) of the two prompts of ``product`` (cached); refuses prompts that would be cut."""
        name = self.class_word(product)
        if name not in self._ids_cache:
            texts = self.prompt_texts(product)
            limit = context_length(self.backbone.tokenizer, int(self.backbone.text.positional_embedding.shape[0]))
            check_prompts_fit(self.backbone.tokenizer, limit,
                              [(state, text, name) for state, text in zip(("normal", "anomalous"), texts)],
                              f"{self.config.n_ctx} context tokens and the state word",
                              "use a shorter product name, or class_name='object'")
            self._ids_cache[name] = self.backbone.tokenize(texts)
        return self._ids_cache[name]

    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None) -> PromptIds:
        """The cacheable text side: the prompt ids of ``product`` (binary: the vocabulary is only checked)."""
        check_vocabulary(vocabulary, allow_empty=True)
        return PromptIds(self.prompt_ids(product))

    def conditioned_context(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """``V_m + h(z_x)`` for every image: (B, n_ctx, width) (``cocoop.py:144-151``)."""
        bias = self.meta_net(image_embedding.to(self.ctx.dtype))
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)

    def encode_prompts(self, ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings (B, 2, C) of per-image prompt ids (B, 2, L) with context (B, n_ctx, D):
        one text-encoder call for all ``B x 2`` prompts."""
        batch, n_states = ids.shape[:2]
        flat = ids.reshape(batch * n_states, -1)
        flat = flat[:, : self.backbone.text_length(flat)].to(self.device)
        x = self.backbone.embed_text(flat, context.repeat_interleave(n_states, dim=0), start=1)
        mask = self.backbone.text_attn_mask
        mask = mask[: flat.shape[1], : flat.shape[1]] if mask is not None else None
        x, _ = run_blocks(self.backbone.text_blocks, x, attn_mask=mask)
        return F.normalize(self.backbone.pool_text(x, flat).float(), dim=-1).reshape(batch, n_states, -1)

    # ------------------------------------------------------------------ image side
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Normalised global embedding (B, C), projected patch tokens per tap (B, h*w, C), and (h, w)."""
        backbone = self.backbone
        images = images.to(self.device)
        x, tapped = frozen_vision_blocks(backbone, images, dpam_layers=self.config.dpam_layers, taps=backbone.tap_layers)
        image_embedding = F.normalize(backbone.pool_image(x).float(), dim=-1)
        patches = [project_patches(backbone, tapped[layer], self.config.patch_ln_post) for layer in backbone.tap_layers]
        return image_embedding, patches, backbone.grid_size(tuple(images.shape[-2:]))

    def forward(self, images: torch.Tensor, vocabulary: Sequence[str] | None = None, *,
                products: Sequence[str] | None = None, text_embeddings: PromptIds | None = None) -> DAPOOutput:
        """Score ``images`` against the two image-conditioned state prompts (K = 1 whatever the vocabulary).

        ``text_embeddings`` (from :meth:`encode_text`) fixes the product of every image;
        otherwise ``products`` names each image's product (``None``: ``object_word``).
        """
        batch = images.shape[0]
        if text_embeddings is not None:
            ids = text_embeddings.ids.unsqueeze(0).expand(batch, -1, -1)
        else:
            check_vocabulary(vocabulary or (), allow_empty=True)
            if products is not None and len(products) != batch:
                raise ValueError(f"products names {len(products)} images, the batch has {batch}")
            names = products if products is not None and self.uses_product_names else [None] * batch
            ids = torch.stack([self.prompt_ids(name) for name in names])
        image_embedding, patches, (h, w) = self.encode_image(images)
        text = self.encode_prompts(ids, self.conditioned_context(image_embedding))
        scale = self.logit_scale
        global_logits = scale * torch.einsum("bc,bkc->bk", image_embedding, text)
        stage_logits = [scale * torch.einsum("bnc,bkc->bkn", p, text).reshape(batch, -1, h, w) for p in patches]
        return DAPOOutput(global_logits, global_logits, stage_logits, image_embedding, text)

    def loss_terms(self, output: DAPOOutput, labels: torch.Tensor, type_masks: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """Cross-entropy on the image label (``cocoop.py:192``), plus ``lam`` x AnomalyCLIP's local loss."""
        device = output.global_logits.device
        g = global_loss(output.global_logits, labels.to(device))
        if self.config.lam > 0:
            local = local_loss(output.stage_logits, type_masks.to(device), _anomalyclip_local())
        else:
            local = g.new_zeros(())
        return {"global": g, "local": local, "total": g + self.config.lam * local}


def _anomalyclip_local():
    """The local-loss switches of AnomalyCLIP's preset (sum over stages, its upsampling)."""
    from dapo.methods.anomalyclip import anomalyclip

    return anomalyclip()


def cocoop() -> CoCoOpConfig:
    """CoCoOp as the release configures it (4 context tokens from "a photo of a"), adapted to ZSAD."""
    return CoCoOpConfig()


def cocoop_recipe() -> TrainConfig:
    """Adam, lr 1e-3, batch 8 (FAPrompt appendix B.1/C.1: the setting of every trained baseline; the
    companion has no SGD/cosine schedule), 10 epochs (CoCoOp release ``MAX_EPOCH: 10``)."""
    return TrainConfig(epochs=10)


def fit_to_backbone(config: CoCoOpConfig, backbone, overrides: dict) -> CoCoOpConfig:
    """The DPAM layers (19 of ViT-L/14's 24) keep their proportion of the vision tower unless given."""
    n_layers = len(backbone.vision_blocks)
    if "dpam_layers" not in overrides and config.dpam_layers and n_layers != OFFICIAL_VISION_LAYERS:
        config = replace(config, dpam_layers=scaled_dpam_layers(n_layers, config.dpam_layers))
    return config


register(Method("cocoop", CoCoOp, cocoop, cocoop_recipe, table3="CoCoOp", fit=fit_to_backbone,
                paper="Zhou et al., Conditional prompt learning for vision-language models (CoCoOp), CVPR 2022"))
