"""The DAPO model: frozen CLIP encoders + prompt learner + deep tokens + adapters.

``DAPO(backbone, config)(images, vocabulary)`` returns a :class:`DAPOOutput`:

* text side: K+1 state embeddings (normal first), each the normalised mean of its E prompt
  embeddings (Eq. 5-6); learned hybrid prompts (DAPO, AnomalyCLIP) or handcrafted lists
  (MultiADS, CLIP-AC) according to ``config.text_prompts``;
* image side: the global embedding ``z_x`` and, at every tapped layer, patch tokens through
  ``ln_post`` (optional) and their own linear adapter into the joint space (Eq. 4);
* global logits ``[cos(z_x, z_N), cos(z_x, z_A)] / tau`` where ``z_A`` is the mean (or
  attention-weighted, appendix 11) abnormal prototype (Eq. 7), and per-stage (K+1)-channel
  similarity maps ``cos(Z_i^p, z_k) / tau`` (Eq. 8).

Only the context tokens, the deep tokens and the adapters can require gradients; the
backbone is frozen. Binary configurations (AnomalyCLIP, CLIP-AC) have a single abnormal
state: their outputs have K = 1 whatever vocabulary is passed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dapo.clip.backbone import Backbone
from dapo.clip.vocabulary import check_prompts_fit, check_vocabulary, context_length
from dapo.methods.contract import AnomalyModel, DAPOOutput
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.dpam import frozen_vision_blocks, run_vision_blocks
from dapo.methods.dapo.losses import loss_terms
from dapo.methods.dapo.progressive import DeepPrompts, run_blocks
from dapo.methods.dapo.prompts import (
    LearnedContext,
    check_placeholders,
    defect_phrase,
    handcrafted_state_prompts,
    learned_prompt_texts,
    placeholder_id,
    token_embedding_stats,
)

TEXT_CHUNK = 512


def vision_token_init(backbone: Backbone, config: DAPOConfig) -> tuple[torch.Tensor, torch.Tensor, str, float | None]:
    """``(mean, std, init, bound)`` for :func:`dapo.methods.dapo.prompts.sample_tokens` of the vision deep tokens.

    ``init="random"`` draws N(0, 1); otherwise ``config.vision_token_init``: ``"vpt_uniform"``
    U(+-sqrt(6 / (3 * patch_h * patch_w + width))) (the official code, VPT's rule) or ``"ln_pre"``.
    """
    width = backbone.vision_width
    if config.init == "random":
        return torch.zeros(width), torch.ones(width), "random", None
    if config.vision_token_init == "vpt_uniform":
        patch_h, patch_w = backbone.patch_size
        bound = math.sqrt(6.0 / (3 * patch_h * patch_w + width))
        return torch.zeros(width), torch.ones(width), "uniform", bound
    mean, std = vision_token_stats(backbone)
    return mean, std, "clip", None


def vision_token_stats(backbone: Backbone) -> tuple[torch.Tensor, torch.Tensor]:
    """Distribution of a vision input token: ``ln_pre`` bias and |weight| (what LayerNorm outputs);
    the ``"ln_pre"`` initialisation of the vision deep tokens draws from it."""
    ln_pre = backbone.visual.ln_pre
    width = backbone.vision_width
    if isinstance(ln_pre, nn.LayerNorm) and ln_pre.weight is not None:
        bias = ln_pre.bias.detach().float() if ln_pre.bias is not None else torch.zeros(width)
        return bias.cpu(), ln_pre.weight.detach().float().abs().cpu()
    return torch.zeros(width), torch.ones(width)


def make_adapter(backbone: Backbone, init: str, trainable: bool, generator: torch.Generator) -> nn.Linear:
    """Linear adapter from the vision width to the joint space (seeded initialisation)."""
    adapter = nn.Linear(backbone.vision_width, backbone.embed_dim)
    with torch.no_grad():
        if init == "projection":
            projection = backbone.visual.proj
            weight = projection.detach().float().t() if projection is not None else torch.eye(backbone.embed_dim)
            adapter.weight.copy_(weight.cpu())
            adapter.bias.zero_()
        else:  # the bounds of PyTorch's default nn.Linear initialisation, drawn from the seeded generator
            bound = backbone.vision_width ** -0.5
            adapter.weight.copy_(torch.empty_like(adapter.weight).uniform_(-bound, bound, generator=generator))
            adapter.bias.copy_(torch.empty_like(adapter.bias).uniform_(-bound, bound, generator=generator))
    return adapter.requires_grad_(trainable)


class DAPO(AnomalyModel):
    """DAPO (or a baseline configuration of it) on a frozen OpenCLIP ViT."""

    family = "dapo"
    config_class = DAPOConfig

    def __init__(self, backbone: Backbone, config: DAPOConfig | None = None) -> None:
        config = config or DAPOConfig()
        super().__init__(backbone, config)
        device, generator = self.device, self.seeded_generator()
        text_mean, text_std = token_embedding_stats(backbone.text.token_embedding.weight.cpu())
        deep_init = config.init if config.init in ("random", "small") else "clip"

        self.context = LearnedContext(config, text_mean, text_std, generator) if config.learned_prompts else None
        self.text_deep = None
        if config.uses_text_deep_tokens:
            n_text = len(backbone.text_blocks)
            depth = self._depth("text_depth", n_text)
            if config.text_layout == "official" and depth < n_text:
                raise ValueError(f"text_layout='official' is implemented at full text depth only ({n_text} layers): "
                                 f"the released code drops shallower deep tokens mid-sequence")
            layers = (1, depth) if config.text_deep_layout == "prefix" else (2, depth - 1)  # (first layer, count)
            if layers[1] < 1:
                raise ValueError(f"text_deep_layout='context' needs text_depth >= 2, got {depth}")
            self.text_deep = DeepPrompts(
                config.text_deep_tokens, backbone.text_width, layers[1], first_layer=layers[0], mode=config.tuning,
                alpha0=config.alpha0, alpha_decay=config.alpha_decay, mean=text_mean, std=text_std, init=deep_init,
                generator=generator)
        self.vision_deep = None
        if config.uses_vision_deep_tokens:
            mean, std, init, bound = vision_token_init(backbone, config)
            self.vision_deep = DeepPrompts(
                config.vision_deep_tokens, backbone.vision_width,
                self._depth("vision_depth", len(backbone.vision_blocks)), mode=config.tuning, alpha0=config.alpha0,
                alpha_decay=config.alpha_decay, mean=mean, std=std, init=init, bound=bound, generator=generator)
        if config.dpam_layers > len(backbone.vision_blocks):
            raise ValueError(f"DAPOConfig.dpam_layers={config.dpam_layers} exceeds the vision tower's "
                             f"{len(backbone.vision_blocks)} layers")
        self.adapters = nn.ModuleList(
            make_adapter(backbone, config.adapter_init, config.train_adapters, generator) for _ in backbone.tap_layers)
        self._placeholder = placeholder_id(backbone.tokenizer)
        self._ids_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._handcrafted_cache: dict[tuple, torch.Tensor] = {}
        self.to(device)

    def _depth(self, key: str, n_layers: int) -> int:
        depth = getattr(self.config, key)
        if depth is None:
            return n_layers
        if depth > n_layers:
            raise ValueError(f"DAPOConfig.{key}={depth} exceeds the encoder's {n_layers} layers")
        return depth

    # ------------------------------------------------------------------ properties
    @property
    def uses_product_names(self) -> bool:
        """Handcrafted prompts name the product (``{}``); learned prompts say "object"."""
        return self.config.handcrafted

    @property
    def temperature(self) -> float:
        return self.config.temperature or 1.0 / self.backbone.logit_scale

    def loss_terms(self, output: DAPOOutput, labels: torch.Tensor, type_masks: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """Eq. 9 with this configuration's switches (:func:`dapo.methods.dapo.losses.loss_terms`)."""
        return loss_terms(output, labels, type_masks, self.config)

    def state_names(self, vocabulary: Sequence[str]) -> tuple[str, ...]:
        """Names of the K+1 states (channels) for a vocabulary."""
        return ("normal", "anomaly") if self.binary else ("normal", *vocabulary)

    # ------------------------------------------------------------------ text side
    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None) -> torch.Tensor:
        """Normalised state embeddings (K+1, C), normal first (Eq. 5-6)."""
        vocabulary = self._check_vocabulary(vocabulary)
        if self.config.learned_prompts:
            return self._encode_learned(vocabulary)
        device_type = self.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        key = ((), product, dtype) if self.binary else (vocabulary, product, dtype)  # one entry per precision
        if key not in self._handcrafted_cache:
            with torch.no_grad():
                self._handcrafted_cache[key] = self._encode_handcrafted(vocabulary, product).cpu()
        return self._handcrafted_cache[key].to(self.device)

    def text_embeddings_for(self, vocabulary: Sequence[str], products: Sequence[str] | None = None) -> torch.Tensor:
        """State embeddings for a batch: (K+1, C), or (B, K+1, C) for per-product handcrafted prompts."""
        if self.uses_product_names and products is not None:
            return torch.stack([self.encode_text(vocabulary, product) for product in products])
        return self.encode_text(vocabulary)

    def _check_vocabulary(self, vocabulary: Sequence[str]) -> tuple[str, ...]:
        """The shared validator (:func:`dapo.clip.vocabulary.check_vocabulary`); binary models may get none."""
        return check_vocabulary(vocabulary, allow_empty=self.binary)

    def _check_prompts_fit(self, vocabulary: tuple[str, ...], texts: Sequence[Sequence[str]], layout: str,
                           hint: str) -> None:
        """Every prompt (``texts``: one list per state) must fit the text tower uncut."""
        words = ("", "") if self.binary else ("", *(defect_phrase(d) for d in vocabulary))
        prompts = [(state, text, own) for state, own, state_texts in zip(self.state_names(vocabulary), words, texts)
                   for text in state_texts]
        limit = context_length(self.backbone.tokenizer, int(self.backbone.text.positional_embedding.shape[0]))
        check_prompts_fit(self.backbone.tokenizer, limit, prompts, layout, hint)

    def _prompt_ids(self, vocabulary: tuple[str, ...]) -> torch.Tensor:
        """Token ids of the K+1 learned prompts (cached per vocabulary); refuses prompts that would be cut."""
        key = () if self.binary else vocabulary
        if key not in self._ids_cache:
            n_deep = self._deep_placeholders
            n_placeholders = n_deep + self.config.n_ctx
            texts = learned_prompt_texts(self.config, vocabulary, n_placeholders)
            suffix = f"{self.config.abnormal_word} {self.config.object_word}".strip()
            self._check_prompts_fit(
                vocabulary, [[text] for text in texts],
                f"{n_deep} deep-token and {self.config.n_ctx} context placeholders and {suffix!r}",
                "use a shorter defect name, or fewer prompt tokens (n_ctx, text_deep_tokens)")
            ids = self.backbone.tokenize(texts)
            check_placeholders(ids, n_placeholders, self._placeholder)
            self._ids_cache[key] = ids
        return self._ids_cache[key]

    @property
    def _deep_placeholders(self) -> int:
        """Placeholder positions the tokenised prompt reserves for deep text tokens."""
        if self.text_deep is None or self.config.text_deep_layout == "context" or self.config.text_layout == "official":
            return 0
        return self.text_deep.n_tokens

    def _run_text(self, ids: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Text transformer on token ids, learned context after the deep-token slots: (P, C).

        ``text_layout="clip"``: deep tokens in their placeholder slots, causal mask, padding after
        the last EOT cut (it cannot change a causal EOT embedding). ``"official"``: deep tokens
        inserted after SOT without positional embedding, full padded length, no mask, pooled at
        the template's EOT index (the released code's behaviour).
        """
        official = self.config.text_layout == "official" and self.text_deep is not None
        if not official:
            ids = ids[:, : self.backbone.text_length(ids)]
        ids = ids.to(self.device)
        n_slot = self.text_deep.n_tokens if self.text_deep is not None else 0
        x = self.backbone.embed_text(ids, context, start=1 + self._deep_placeholders)
        mask = self.backbone.text_attn_mask
        mask = mask[: ids.shape[1], : ids.shape[1]] if mask is not None else None
        if official:
            x = torch.cat([x[:, :1], x.new_zeros(x.shape[0], n_slot, x.shape[2]), x[:, 1:]], dim=1)
            mask = None
        x, _ = run_blocks(self.backbone.text_blocks, x, attn_mask=mask, deep=self.text_deep,
                          slot=slice(1, 1 + n_slot))
        return self.backbone.pool_text(x, ids)

    def prompt_embeddings(self, vocabulary: Sequence[str] = (), product: str | None = None
                          ) -> tuple[torch.Tensor, list[int]]:
        """Every prompt's embedding before the per-state mean (P, C), and the prompt count per state.

        Learned prompts: E per state (Eq. 3); handcrafted: one per template x state phrase. Used
        by :meth:`encode_text` and by the embedding plots of notebook 01.
        """
        vocabulary = self._check_vocabulary(vocabulary)
        if self.config.learned_prompts:
            ids = self._prompt_ids(vocabulary)
            n_states, n_prompts = ids.shape[0], self.context.n_prompts
            context = self.context.contexts(n_states - 1)
            return self._run_text(ids.repeat_interleave(n_prompts, dim=0), context), [n_prompts] * n_states
        states = handcrafted_state_prompts(self.config, vocabulary, product)

        def run() -> torch.Tensor:
            self._check_prompts_fit(vocabulary, states, "the rest of the template and state phrase",
                                    "use a shorter defect or product name, or shorter templates and state phrases")
            ids = self.backbone.tokenize([text for state in states for text in state])
            return torch.cat([self._run_text(chunk) for chunk in ids.split(TEXT_CHUNK)])
        counts = [len(state) for state in states]
        if self.text_deep is not None:  # learned deep text tokens: the output depends on this model's parameters
            return run(), counts
        dtype = torch.get_autocast_dtype(self.device.type) if torch.is_autocast_enabled(self.device.type) else None
        key = ("handcrafted", tuple(text for state in states for text in state), str(self.device), dtype)
        return self.backbone.frozen_text(key, run), counts

    def _encode_learned(self, vocabulary: tuple[str, ...]) -> torch.Tensor:
        return state_means(*self.prompt_embeddings(vocabulary), normalize_first=self.config.state_mean == "normalized")

    def _encode_handcrafted(self, vocabulary: tuple[str, ...], product: str | None) -> torch.Tensor:
        return state_means(*self.prompt_embeddings(vocabulary, product),
                           normalize_first=self.config.state_mean == "normalized")

    # ------------------------------------------------------------------ image side
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Global embedding (B, C), adapted patch embeddings per stage (B, h*w, C), and (h, w).

        With ``config.dpam_layers`` the taps in the last layers come from AnomalyCLIP's v-v
        attention path (:mod:`dapo.methods.dapo.dpam`); the global embedding always from the original path.
        """
        backbone = self.backbone
        images = images.to(self.device)
        n_deep = self.vision_deep.n_tokens if self.vision_deep is not None else 0
        if self.vision_deep is None:  # nothing learnable in the image tower: shared by every model on the backbone
            x, tapped = frozen_vision_blocks(backbone, images, dpam_layers=self.config.dpam_layers,
                                             taps=backbone.tap_layers)
        else:
            x = backbone.embed_image(images)
            if n_deep:
                x = torch.cat([x[:, :1], x.new_zeros(x.shape[0], n_deep, x.shape[2]), x[:, 1:]], dim=1)
            x, tapped = run_vision_blocks(backbone.vision_blocks, x, dpam_layers=self.config.dpam_layers,
                                          deep=self.vision_deep, slot=slice(1, 1 + n_deep), taps=backbone.tap_layers)
        image_embedding = F.normalize(backbone.pool_image(x, n_deep).float(), dim=-1)
        patches = [
            F.normalize(adapter(backbone.patch_tokens(tapped[layer], n_deep, ln_post=self.config.patch_ln_post))
                        .float(), dim=-1)
            for adapter, layer in zip(self.adapters, backbone.tap_layers)
        ]
        return image_embedding, patches, backbone.grid_size(tuple(images.shape[-2:]))

    # ------------------------------------------------------------------ scores
    def abnormal_prototype(self, image_embedding: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """z_A (B, C): mean of the defect embeddings, or attention-weighted by relevance to the image."""
        defects = text_embeddings[..., 1:, :]
        if self.config.aggregation == "mean":
            prototype = defects.mean(dim=-2).expand_as(image_embedding)
        else:
            relevance = _similarity(image_embedding, defects) / self.temperature
            prototype = torch.einsum("bk,bkc->bc", relevance.softmax(dim=-1),
                                     defects.expand(image_embedding.shape[0], -1, -1))
        return F.normalize(prototype, dim=-1)

    def forward(self, images: torch.Tensor, vocabulary: Sequence[str] | None = None, *,
                products: Sequence[str] | None = None, text_embeddings: torch.Tensor | None = None) -> DAPOOutput:
        """Score ``images`` (B, 3, H, W) against the states of ``vocabulary``.

        ``text_embeddings`` (from :meth:`encode_text`) skips the text encoder (inference);
        ``products`` names each image's product for handcrafted prompts.
        """
        if text_embeddings is None:
            if vocabulary is None and not self.binary:
                raise ValueError("pass a vocabulary of defect names (or precomputed text_embeddings)")
            text_embeddings = self.text_embeddings_for(vocabulary or (), products)
        image_embedding, patches, (h, w) = self.encode_image(images)
        text = text_embeddings.to(image_embedding.device, torch.float32)
        tau = self.temperature
        state_logits = _similarity(image_embedding, text) / tau
        normal = text[..., 0, :].expand_as(image_embedding)
        prototype = self.abnormal_prototype(image_embedding, text)
        global_logits = torch.stack([(image_embedding * normal).sum(-1), (image_embedding * prototype).sum(-1)],
                                    dim=-1) / tau
        equation = "bnc,kc->bkn" if text.dim() == 2 else "bnc,bkc->bkn"
        stage_logits = [torch.einsum(equation, p, text).reshape(p.shape[0], -1, h, w) / tau for p in patches]
        return DAPOOutput(global_logits, state_logits, stage_logits, image_embedding, text)


def _similarity(image_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (B, S) of normalised images to states (S, C) or per image (B, S, C)."""
    if text.dim() == 2:
        return image_embedding @ text.t()
    return torch.einsum("bc,bsc->bs", image_embedding, text)


def state_means(embeddings: torch.Tensor, counts: list[int], normalize_first: bool = False) -> torch.Tensor:
    """One normalised embedding per state (S, C): the mean of its prompts' embeddings (Eq. 5-6),
    each prompt normalised first when ``normalize_first`` (MultiADS)."""
    embeddings = embeddings.float()
    if normalize_first:
        embeddings = F.normalize(embeddings, dim=-1)
    means = torch.stack([group.mean(dim=0) for group in embeddings.split(counts)])
    return F.normalize(means, dim=-1)
