"""FAPrompt (Zhu, Ong, Shen, Pang: "Fine-grained Abnormality Prompt Learning for Zero-shot Anomaly
Detection"): compound abnormality prompts refined per image by a data-dependent abnormality prior.

Sources: the appendix (``shared/papers/003_*``: section B.1, Algorithm 1) and, for the main paper's
equations, the released code github mala-lab/FAPrompt at commit
``7e9d9d2aeb17648ae52374708ea95d3f8396cecc`` (cited as ``file:line``; read for facts, not copied).

* **Compound Abnormality Prompts (CAP)**: a normal prompt ``[SOT] V1..V5 object. [EOT]`` and K = 10
  abnormal prompts ``[SOT] V1..V5 A1^i A2^i damaged object. [EOT]`` that share the normal tokens
  (``FAPrompt.py:65-131``); the abnormal prototype is the mean of the K embeddings
  (``train.py:93``) and an orthogonality loss ``sum_{i<j} |cos(F_ai, F_aj)|`` keeps them apart
  (``train.py:85-89``, weight 0.1 at ``:161``).
* **Data-dependent Abnormality Prior (DAP)**: the M = 10 patch tokens most similar to the abnormal
  prototype (``train.py:103``) feed psi (``Linear(C*M, C*M/16) - ReLU - Linear(., D)``,
  ``FAPrompt.py:75-79``), whose output is added to every abnormal token of every abnormal prompt
  (``FAPrompt.py:169-173``); the prior of a normal image is pushed to 0 (MSE, ``train.py:126-129``).
* Text: 4 learnable tokens overwrite positions 1-4 at text layers 2-9 (``depth=9``, ``t_n_ctx=4``:
  ``train.sh``; ``AnomalyCLIP.py:237-251``), scaled to the text tower's depth.
* Vision: AnomalyCLIP's V-V attention (:mod:`dapo.methods.dapo.dpam`) from the 6th of 24 layers
  (``train.py:48``: ``DAPM_replace(DPAM_layer=20)``), scaled to the vision tower's depth; the patch
  map is the V-V path's last layer through ``ln_post`` and the projection (``AnomalyCLIP.py:386-389``).
* Two maps (``stage_logits``): the patches against the static prompts and against the image's refined
  prompts, ``softmax(cos / 0.07)`` (``model_load.py:243-256``); anomaly map = their mean abnormal
  probability (``test.py:145``), Gaussian sigma 10 (B.1); image score
  ``0.5 * (p_refined(x) + (2 max_1 + max_2) / 3)`` with ``max_s`` the largest patch abnormal
  probability of map s (``test.py:136-148``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dapo.clip.backbone import Backbone
from dapo.methods.contract import AnomalyModel, DAPOOutput, MethodConfig
from dapo.methods.dapo.dpam import (
    OFFICIAL_DPAM_LAYERS,
    OFFICIAL_VISION_LAYERS,
    frozen_vision_blocks,
    scaled_dpam_layers,
)
from dapo.methods.dapo.losses import dice_loss, focal_loss
from dapo.methods.dapo.progressive import DeepPrompts, run_blocks
from dapo.methods.dapo.prompts import PLACEHOLDER, check_placeholders, placeholder_id
from dapo.methods.registry import Method, TrainConfig, register  # TrainConfig: the recipe class the registry uses
from dapo.methods.scoring import stage_probabilities

#: The release read for the main paper's equations (file:line citations refer to it).
RELEASE = "github mala-lab/FAPrompt @ 7e9d9d2aeb17648ae52374708ea95d3f8396cecc"
PAPER = ("Zhu, Ong, Shen, Pang: Fine-grained Abnormality Prompt Learning for Zero-shot Anomaly Detection "
         "(FAPrompt), ICCV 2025")
#: ViT-L/14's text tower: 12 layers; FAPrompt's learnable text tokens cover the first 9 (B.1).
OFFICIAL_TEXT_LAYERS = 12
PRIOR_SELECTIONS = ("top", "first")
INIT_STD = 0.02  # FAPrompt.py:86-87, 95: nn.init.normal_(std=0.02)


@dataclass(frozen=True)
class FAPromptConfig(MethodConfig):
    """FAPrompt's configuration (appendix B.1 where it states a thing, the release where it is silent).

    n_normal_ctx, n_abnormal_ctx:
        Learnable normal tokens V (5) and abnormal tokens A^i per abnormal prompt (2): B.1 ("five and
        two"); ``FAPrompt.py:65-66``.
    n_abnormal_prompts:
        K fine-grained abnormal prompts, 10: B.1; ``FAPrompt.py:67`` (``num_p``).
    n_prior_patches:
        M patch tokens fed to psi, 10: B.1; ``FAPrompt.py:68`` (``k``), ``train.py:103``.
    prior_hidden_divisor:
        psi's hidden width is ``C * M / 16``: B.1; ``FAPrompt.py:76``.
    prior_selection:
        ``"top"``: the M patches most similar to the abnormal prototype, by similarity (Algorithm 1
        line 9); ``"first"``: the release's selection, which indexes patch ``k`` instead of
        ``pk_indx[i, k]`` and so feeds psi the first M patches of the grid (``train.py:106-110``,
        ``test.py:115-119``).
    object_word, abnormal_word, prompt_suffix:
        ``"object"``, ``"damaged"``, ``"."``: ``FAPrompt.py:63, 106-107``.
    text_depth, text_deep_tokens:
        Learnable text tokens in the first 9 text layers, 4 per layer (B.1; ``train.sh``
        ``depth=9 t_n_ctx=4``): layer 1 sees the prompt, layers 2..text_depth get their own 4 tokens at
        positions 1-4 (``AnomalyCLIP.py:237-251``). Scaled to shallower text towers by the registry.
    dpam_layers:
        V-V attention in the last 19 of 24 vision layers, i.e. from the 6th (B.1; ``train.py:48``).
    temperature:
        0.07 for every similarity (``model_load.py:248, 256``; ``train.py:139``; ``test.py:137``).
    global_ln_post:
        The global embedding is the class token projected *without* ``ln_post`` in the release
        (``AnomalyCLIP.py:389``); ``True`` applies CLIP's ``ln_post`` as CLIP does.
    refined_map_weight:
        Weight of the refined map's focal + Dice terms, 0.5 (``train.py:156-158``).
    score_loss_weight, orthogonal_weight, prior_weight:
        Weights of the image-score focal loss (1), the orthogonality loss (0.1) and the prior loss (1):
        ``train.py:161``.
    static_max_weight:
        Weight of the static map's maximum in the map part of the image score, 2/3
        (``test.py:147``: ``(2 * max1 + max2) / 3``).
    focal_smooth:
        The release focal loss's label smoothing, 1e-5 (``loss.py:21``).
    smoothing_sigma:
        Gaussian sigma 10 at inference (B.1; ``test.py:235``).
    image_score_global_weight:
        0.5: ``0.5 * (p_refined + map part)`` (``test.py:148``).
    upsample_align_corners:
        ``False``: ``F.interpolate(mode="bilinear")`` (``model_load.py:240``).
    """

    name: str = "FAPrompt"
    n_normal_ctx: int = 5
    n_abnormal_ctx: int = 2
    n_abnormal_prompts: int = 10
    n_prior_patches: int = 10
    prior_hidden_divisor: int = 16
    prior_selection: str = "top"
    object_word: str = "object"
    abnormal_word: str = "damaged"
    prompt_suffix: str = "."
    text_depth: int = 9
    text_deep_tokens: int = 4
    dpam_layers: int = OFFICIAL_DPAM_LAYERS
    temperature: float = 0.07
    global_ln_post: bool = False
    refined_map_weight: float = 0.5
    score_loss_weight: float = 1.0
    orthogonal_weight: float = 0.1
    prior_weight: float = 1.0
    static_max_weight: float = 2.0 / 3.0
    focal_smooth: float = 1e-5
    smoothing_sigma: float = 10.0
    image_score_global_weight: float = 0.5
    upsample_align_corners: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("n_normal_ctx", "n_abnormal_ctx", "n_abnormal_prompts", "n_prior_patches",
                    "prior_hidden_divisor", "text_depth"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FAPromptConfig.{key} must be an integer >= 1, got {value!r}")
        if self.text_deep_tokens < 0 or self.dpam_layers < 0:
            raise ValueError(f"FAPromptConfig.text_deep_tokens and dpam_layers must be >= 0, got "
                             f"{self.text_deep_tokens}, {self.dpam_layers}")
        if self.text_deep_tokens > self.n_normal_ctx:
            raise ValueError(f"FAPromptConfig.text_deep_tokens={self.text_deep_tokens} must not exceed n_normal_ctx="
                             f"{self.n_normal_ctx}: the deep tokens overwrite the first normal-token positions")
        if self.prior_selection not in PRIOR_SELECTIONS:
            raise ValueError(f"FAPromptConfig.prior_selection={self.prior_selection!r}: expected one of {PRIOR_SELECTIONS}")
        if not self.temperature > 0:
            raise ValueError(f"FAPromptConfig.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.static_max_weight <= 1.0:
            raise ValueError(f"FAPromptConfig.static_max_weight must lie in [0, 1], got {self.static_max_weight}")


@dataclass
class FAPromptOutput(DAPOOutput):
    """:class:`DAPOOutput` plus what FAPrompt's losses need.

    stage_logits: [static map, refined map], each (B, 2, h, w). text_embeddings: the refined
    (B, 2, C) [normal, abnormal prototype]. abnormal_prompt_embeddings: the K static abnormal prompt
    embeddings (K, C), unnormalised (``None`` when the text side was precomputed). prior: psi's
    output Omega_x (B, D).
    """

    abnormal_prompt_embeddings: torch.Tensor | None = None
    prior: torch.Tensor | None = None


# ----------------------------------------------------------------------------- formulas


def orthogonality_loss(features: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j} |cos(F_i, F_j)|`` over the K abnormal prompt embeddings (K, C) (``train.py:85-89``)."""
    unit = F.normalize(features, dim=-1)
    cosines = unit @ unit.t()
    pairs = torch.triu_indices(features.shape[0], features.shape[0], offset=1, device=features.device)
    return cosines[pairs[0], pairs[1]].abs().sum()


def select_prior_patches(patches: torch.Tensor, abnormal_probs: torch.Tensor, m: int, mode: str = "top") -> torch.Tensor:
    """The M patch tokens psi reads: (B, N, C) patches, (B, N) abnormal probabilities -> (B, M, C).

    ``"top"``: the M most abnormal patches, most abnormal first (``torch.topk(sorted=True)``,
    ``train.py:103``); ``"first"``: patches 0..M-1, as the release's loop indexes them (``train.py:109``).
    """
    n_patches = patches.shape[1]
    if m > n_patches:
        raise ValueError(f"FAPromptConfig.n_prior_patches={m} exceeds the {n_patches} patches of the image grid: "
                         f"lower n_prior_patches or use larger images")
    if mode == "first":
        return patches[:, :m]
    index = abnormal_probs.topk(m, dim=1, largest=True, sorted=True).indices
    return patches.gather(1, index.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))


def prior_loss(prior: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch's normal images of ``mean_d Omega_x[d]^2`` (MSE to 0, ``train.py:126-129``)."""
    normal = (labels.to(prior.device) == 0).to(prior.dtype)
    return (prior.float().pow(2).mean(dim=-1) * normal.float()).sum()


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def map_maxima(stage_logits: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Largest patch abnormal probability of every map, at patch resolution (``train.py:101, 136``)."""
    return [_at_least_float32(logits).softmax(dim=1)[:, 1].flatten(1).amax(dim=1) for logits in stage_logits]


def image_scores(output: DAPOOutput, config: FAPromptConfig) -> torch.Tensor:
    """``w p_refined(x) + (1 - w) (a max_static + (1 - a) max_refined)`` with w = 0.5, a = 2/3 (``test.py:136-148``)."""
    global_prob = _at_least_float32(output.global_logits).softmax(dim=-1)[:, 1]
    static_max, refined_max = map_maxima(output.stage_logits)
    a = config.static_max_weight
    w = config.image_score_global_weight
    return w * global_prob + (1.0 - w) * (a * static_max + (1.0 - a) * refined_max)


def binary_focal_with_logits(scores: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """The release's ``BinaryFocalLoss`` (alpha 1, gamma 2, ``logits=True``): ``(1 - p_t)^gamma BCE``, mean
    (``loss.py:88-107``). The release passes the image *score* (a probability) as the logit (``train.py:148``)."""
    bce = F.binary_cross_entropy_with_logits(scores, labels.float(), reduction="none")
    return ((1.0 - torch.exp(-bce)) ** gamma * bce).mean()


def fit_to_backbone(config: FAPromptConfig, backbone: Backbone, overrides: dict) -> FAPromptConfig:
    """ViT-L/14 depths as fractions of the backbone's: 9 of 12 text layers, V-V attention in 19 of 24
    vision layers (:func:`dapo.methods.dapo.dpam.scaled_dpam_layers`); explicit overrides are kept."""
    changes = {}
    n_text = len(backbone.text_blocks)
    if "text_depth" not in overrides and n_text != OFFICIAL_TEXT_LAYERS:
        changes["text_depth"] = min(n_text, max(1, math.floor(config.text_depth * n_text / OFFICIAL_TEXT_LAYERS + 0.5)))
    n_vision = len(backbone.vision_blocks)
    if "dpam_layers" not in overrides and n_vision != OFFICIAL_VISION_LAYERS and config.dpam_layers:
        changes["dpam_layers"] = scaled_dpam_layers(n_vision, config.dpam_layers)
    return config.with_overrides(**changes) if changes else config


def _seeded_linear(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default bounds (U(+-1/sqrt(n_in)) for weight and bias) from ``generator``."""
    layer = nn.Linear(n_in, n_out)
    bound = n_in ** -0.5
    with torch.no_grad():
        layer.weight.copy_((torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(n_out, generator=generator) * 2 - 1) * bound)
    return layer


# ----------------------------------------------------------------------------- model


class FAPrompt(AnomalyModel):
    """FAPrompt on a frozen OpenCLIP ViT (binary: one abnormal state whatever the vocabulary)."""

    family = "faprompt"
    config_class = FAPromptConfig

    def __init__(self, backbone: Backbone, config: FAPromptConfig | None = None) -> None:
        config = config or FAPromptConfig()
        super().__init__(backbone, config)
        device, generator = self.device, self.seeded_generator()
        width, dim = backbone.text_width, backbone.embed_dim
        n_text, n_vision = len(backbone.text_blocks), len(backbone.vision_blocks)
        if config.text_depth > n_text:
            raise ValueError(f"FAPromptConfig.text_depth={config.text_depth} exceeds the text tower's {n_text} layers")
        if config.dpam_layers > n_vision:
            raise ValueError(f"FAPromptConfig.dpam_layers={config.dpam_layers} exceeds the vision tower's {n_vision} layers")
        self.normal_ctx = nn.Parameter(torch.randn(config.n_normal_ctx, width, generator=generator) * INIT_STD)
        self.abnormal_ctx = nn.Parameter(
            torch.randn(config.n_abnormal_prompts, config.n_abnormal_ctx, width, generator=generator) * INIT_STD)
        self.text_deep = None
        if config.text_deep_tokens and config.text_depth >= 2:
            self.text_deep = DeepPrompts(config.text_deep_tokens, width, config.text_depth - 1, first_layer=2,
                                         mode="naive", init="small", generator=generator)
        n_in = dim * config.n_prior_patches
        hidden = max(1, n_in // config.prior_hidden_divisor)
        self.prior_net = nn.Sequential(_seeded_linear(n_in, hidden, generator), nn.ReLU(),
                                       _seeded_linear(hidden, width, generator))
        self._placeholder = placeholder_id(backbone.tokenizer)
        self._ids: dict[str, torch.Tensor] = {}
        self.to(device)

    # ------------------------------------------------------------------ text side
    def prompt_ids(self, state: str) -> torch.Tensor:
        """Token ids of the normal (``"normal"``) or abnormal (``"abnormal"``) prompt (1, L)."""
        if state not in self._ids:
            config = self.config
            n = config.n_normal_ctx + (config.n_abnormal_ctx if state == "abnormal" else 0)
            words = [config.abnormal_word] if state == "abnormal" else []
            text = " ".join([PLACEHOLDER] * n + [w for w in (*words, config.object_word) if w]) + config.prompt_suffix
            ids = self.backbone.tokenize([text])
            check_placeholders(ids, n, self._placeholder)
            if int(ids[0, -1]) != 0:  # no padding left: the tokenizer may have cut the prompt
                raise ValueError(f"the FAPrompt {state} prompt {text!r} does not fit the text tower's context: "
                                 f"use fewer learnable tokens (n_normal_ctx, n_abnormal_ctx)")
            self._ids[state] = ids
        return self._ids[state]

    def run_text(self, ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Text tower on prompts whose positions 1..n are the learnable ``context`` (P, n, D): (P, C)."""
        backbone = self.backbone
        ids = ids[:, : backbone.text_length(ids)].to(self.device).expand(context.shape[0], -1)
        x = backbone.embed_text(ids, context, start=1)
        mask = backbone.text_attn_mask
        mask = mask[: ids.shape[1], : ids.shape[1]] if mask is not None else None
        n_deep = self.text_deep.n_tokens if self.text_deep is not None else 0
        x, _ = run_blocks(backbone.text_blocks, x, attn_mask=mask, deep=self.text_deep, slot=slice(1, 1 + n_deep))
        return backbone.pool_text(x, ids)

    def abnormal_context(self, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Context of the K abnormal prompts ``[V, A^i + Omega]``: (K, n, D), or (B, K, n, D) with a prior (B, D)."""
        abnormal = self.abnormal_ctx
        if prior is not None:
            abnormal = abnormal.unsqueeze(0) + prior.to(abnormal.dtype)[:, None, None, :]
        normal = self.normal_ctx.expand(*abnormal.shape[:-2], -1, -1)
        return torch.cat([normal, abnormal], dim=-2)

    def static_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normal prompt embedding (C,) and the K abnormal prompt embeddings (K, C), unnormalised."""
        normal = self.run_text(self.prompt_ids("normal"), self.normal_ctx.unsqueeze(0))[0]
        abnormal = self.run_text(self.prompt_ids("abnormal"), self.abnormal_context())
        return normal, abnormal

    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None) -> torch.Tensor:
        """The image-independent text side: normalised [normal, mean of the K abnormal] (2, C).
        The per-image refined prompts are encoded in :meth:`forward`."""
        normal, abnormal = self.static_text()
        return F.normalize(torch.stack([normal.float(), abnormal.float().mean(dim=0)]), dim=-1)

    # ------------------------------------------------------------------ image side
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Normalised global embedding (B, C), V-V patch embeddings (B, N, C) and the grid (h, w)."""
        backbone = self.backbone
        blocks = backbone.vision_blocks
        images = images.to(self.device)
        last = len(blocks)
        x, tapped = frozen_vision_blocks(backbone, images, dpam_layers=self.config.dpam_layers, taps=(last,))
        proj = backbone.visual.proj
        patches = backbone.patch_tokens(tapped[last])
        patches = patches @ proj.to(patches.dtype) if proj is not None else patches
        if self.config.global_ln_post:
            image = backbone.pool_image(x)
        else:
            image = x[:, 0] @ proj.to(x.dtype) if proj is not None else x[:, 0]
        return (F.normalize(image.float(), dim=-1), F.normalize(patches.float(), dim=-1),
                backbone.grid_size(tuple(images.shape[-2:])))

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, vocabulary: Sequence[str] | None = None, *,
                products: Sequence[str] | None = None, text_embeddings: torch.Tensor | None = None) -> FAPromptOutput:
        """Static map, top-M prior, refined prompts per image, refined map and global logits."""
        config = self.config
        abnormal_prompts = None
        if text_embeddings is None:
            normal, abnormal_prompts = self.static_text()
            static = F.normalize(torch.stack([normal.float(), abnormal_prompts.float().mean(dim=0)]), dim=-1)
        else:
            static = text_embeddings.to(self.device, torch.float32)
            if static.shape != (2, self.backbone.embed_dim):
                raise ValueError(f"FAPrompt takes text_embeddings of shape (2, {self.backbone.embed_dim}) from "
                                 f"encode_text, got {tuple(static.shape)}")
            normal = static[0]
        image, patches, (h, w) = self.encode_image(images)
        tau = config.temperature
        static_logits = patches @ static.t() / tau  # (B, N, 2)
        selected = select_prior_patches(patches, static_logits.softmax(dim=-1)[..., 1].detach(),
                                        config.n_prior_patches, config.prior_selection)
        prior = self.prior_net(selected.flatten(1).to(self.prior_net[0].weight.dtype))
        batch, n_prompts = prior.shape[0], config.n_abnormal_prompts
        context = self.abnormal_context(prior).flatten(0, 1)  # (B*K, n, D)
        refined = self.run_text(self.prompt_ids("abnormal"), context).float().view(batch, n_prompts, -1).mean(dim=1)
        text = F.normalize(torch.stack([normal.float().expand_as(refined), refined], dim=1), dim=-1)  # (B, 2, C)
        global_logits = torch.einsum("bc,bsc->bs", image, text) / tau
        refined_logits = torch.einsum("bnc,bsc->bsn", patches, text) / tau
        stage_logits = [static_logits.transpose(1, 2).reshape(batch, 2, h, w), refined_logits.reshape(batch, 2, h, w)]
        return FAPromptOutput(global_logits, global_logits, stage_logits, image, text,
                              abnormal_prompt_embeddings=abnormal_prompts, prior=prior)

    # ------------------------------------------------------------------ training and scoring
    def loss_terms(self, output: FAPromptOutput, labels: torch.Tensor, type_masks: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """``local + global + score + 0.1 orthogonal + prior`` (``train.py:151-161``).

        local: per map, focal + Dice(abnormal, mask) + Dice(normal, 1 - mask), the refined map at 0.5;
        global: cross-entropy of the refined global logits; score: the release's binary focal loss
        on the image score; orthogonal: :func:`orthogonality_loss`; prior: :func:`prior_loss`.
        """
        config = self.config
        if output.abnormal_prompt_embeddings is None or output.prior is None:
            raise ValueError("FAPrompt.loss_terms needs the output of a forward pass without text_embeddings "
                             "(the orthogonality loss reads the K abnormal prompt embeddings)")
        device = output.global_logits.device
        labels = torch.as_tensor(labels).to(device)
        mask = (type_masks.to(device) > 0).long()
        size = tuple(mask.shape[-2:])
        local = output.global_logits.new_zeros((), dtype=torch.float32)
        for weight, logits in zip((1.0, config.refined_map_weight), output.stage_logits):
            probs = stage_probabilities(logits, size, softmax_first=config.softmax_before_upsample,
                                        align_corners=config.upsample_align_corners)
            term = (focal_loss(probs, mask, 2.0, config.focal_smooth) + dice_loss(probs[:, 1], mask)
                    + dice_loss(probs[:, 0], 1 - mask))
            local = local + weight * term
        global_term = F.cross_entropy(output.global_logits.float(), labels.long())
        score = binary_focal_with_logits(image_scores(output, config), labels)
        orthogonal = orthogonality_loss(output.abnormal_prompt_embeddings.float())
        prior = prior_loss(output.prior, labels)
        total = (local + global_term + config.score_loss_weight * score + config.orthogonal_weight * orthogonal
                 + config.prior_weight * prior)
        return {"total": total, "global": global_term, "local": local, "score": score, "orthogonal": orthogonal,
                "prior": prior}

    def predict(self, output: DAPOOutput, size: tuple[int, int], n_defects: int):
        """The default maps (mean of the two maps' abnormal probability, sigma 10) with FAPrompt's image score."""
        from dapo.methods.scoring import predict

        prediction = predict(self, output, size, n_defects)
        prediction.image_score = image_scores(output, self.config)
        return prediction


def release_unused_projection_parameters(text_width: int, text_depth: int, out_features: int = 896) -> int:
    """Parameters of the release's ``compound_prompt_projections``: ``text_depth - 1`` copies of
    ``Linear(text_width, 896)`` built (``FAPrompt.py:97-98``) but never called; counted by PyTorch."""
    return (text_depth - 1) * (text_width * out_features + out_features)


def faprompt() -> FAPromptConfig:
    """FAPrompt with appendix B.1's settings and the release's scoring."""
    return FAPromptConfig()


def faprompt_recipe() -> TrainConfig:
    """B.1: Adam, lr 1e-3, batch 8, 7 epochs; betas (0.5, 0.999) from ``train.py:49``; MVTec-AD's
    ``combined`` images kept (the release trains on every anomalous test image)."""
    return TrainConfig(lr=1e-3, batch_size=8, epochs=7, betas=(0.5, 0.999), multi_defect="as_class")


register(Method("faprompt", FAPrompt, faprompt, faprompt_recipe, training_free=False, paper=PAPER, table3=None,
                fit=fit_to_backbone))
