"""WinCLIP (Jeong et al., "WinCLIP: zero-/few-shot anomaly classification and segmentation",
CVPR 2023), zero-shot setting: training-free, no learnable parameters.

* **Compositional prompt ensemble** (paper Sec. 4.1, appendix prompt lists): every state word x
  every template, filled with the product name; the prompt embeddings of a state are averaged
  and normalised, one normal and one anomalous text embedding per product.
* **Image score** (zero-shot AC): ``ascore_0 = softmax(cos(f_img, [t_n, t_a]) / tau)[anomalous]``
  of CLIP's class-token embedding (paper Eq. 1).
* **Multi-scale window embeddings** (Sec. 4.2): for every window of k x k patch tokens (k = 2 and
  3, stride 1) the vision tower runs on the class token and the window's tokens only; the paper
  masks the other patches out of attention, which gives the same class embedding as leaving them
  out of the sequence (a token hidden from every query changes nothing), so the windows run as
  short sequences, all windows of a scale in one batch (:func:`window_embeddings`). Each window
  gets ``ascore_0`` of its class embedding.
* **Harmonic aggregation** (Sec. 4.2): a patch's score at one scale is the harmonic mean of the
  scores of the windows covering it (:func:`harmonic_aggregation`); the zero-shot map is the
  harmonic mean over the window scales and the image scale (``ascore_0`` everywhere), as both
  public reproductions do (anomalib ``winclip/torch_model.py`` ``_compute_zero_shot_scores``;
  zqhang/Accurate-WinCLIP-pytorch ``reproduce_WinCLIP.py``).

The authors released no code; where the paper is silent this module follows those two
reproductions (read for facts only), named per field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from dapo.clip.vocabulary import check_prompts_fit, check_vocabulary, context_length
from dapo.methods.contract import AnomalyModel, DAPOOutput, MethodConfig
from dapo.methods.dapo.model import state_means
from dapo.methods.dapo.progressive import run_blocks
from dapo.methods.dapo.prompts import product_phrase
from dapo.methods.recipe import TrainConfig
from dapo.methods.registry import Method, register

PAPER = "Jeong et al., WinCLIP: zero-/few-shot anomaly classification and segmentation, CVPR 2023"

#: Normal state words ("[o]" = the object), WinCLIP appendix (state-level prompts); the same list
#: in anomalib ``winclip/prompting.py`` and zqhang/Accurate-WinCLIP-pytorch ``prompt_order``.
NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
#: Anomalous state words, WinCLIP appendix (the same four in both reproductions).
ABNORMAL_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
#: Templates, WinCLIP appendix (template-level prompts): eleven wordings, each with "a" and "the".
#: Both reproductions transcribe 21 of them with "a jpeg corrupted photo of the {}." twice and without
#: "a cropped photo of a {}." and "a jpeg corrupted photo of a {}." (a slip: every other wording comes
#: in both articles); this list has the 22 distinct ones. Not checked against the paper's own text
#: (no copy in this project's papers): docs/methods/winclip.md.
TEMPLATES = (
    "a cropped photo of the {}.", "a cropped photo of a {}.", "a close-up photo of a {}.",
    "a close-up photo of the {}.", "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of the {}.", "a dark photo of a {}.", "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.", "a blurry photo of a {}.",
    "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.", "a photo of the small {}.",
    "a photo of a large {}.", "a photo of the large {}.", "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.", "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)
#: Tokens per call of the vision tower when the windows run (memory bound, not a method choice).
WINDOW_TOKENS_PER_CALL = 1 << 14


@dataclass(frozen=True)
class WinCLIPConfig(MethodConfig):
    """WinCLIP's choices (the scoring fields of :class:`MethodConfig` keep their meaning).

    normal_states, abnormal_states, templates:
        The compositional prompt ensemble (paper Sec. 4.1 and appendix; ``{}`` in a state = the
        product name, ``"object"`` when unknown; ``{}`` in a template = the state phrase).
    window_sizes:
        Window side lengths in patches: the small and mid scales, 2 x 2 and 3 x 3 patches (paper
        Sec. 4.2 / 5: 32 and 48 px windows on ViT-B/16+; anomalib ``scales=(2, 3)``,
        Accurate-WinCLIP ``kernel_size=32, 48`` at patch 16).
    window_stride:
        Stride of the sliding windows in patches: 1 (anomalib ``make_masks(..., stride=1)``;
        Accurate-WinCLIP ``stride_size=16`` = one patch). Every patch must be covered.
    temperature:
        tau of ``softmax(cos / tau)`` for the image and every window: 0.07 (CLIP's, paper Eq. 1;
        anomalib ``TEMPERATURE = 0.07``; Accurate-WinCLIP ``/0.07``).
    image_score_global_weight:
        1: the zero-shot image score is ``ascore_0`` of the whole image (paper Sec. 4.1; both
        reproductions); the map term joins it only in WinCLIP+ (few-shot, not built here).
    smoothing_sigma, upsample_align_corners:
        No Gaussian smoothing, bilinear upsampling with ``align_corners=False`` (anomalib
        ``F.interpolate(..., mode="bilinear")``; Accurate-WinCLIP the same).
    """

    name: str = "WinCLIP"
    normal_states: tuple[str, ...] = NORMAL_STATES
    abnormal_states: tuple[str, ...] = ABNORMAL_STATES
    templates: tuple[str, ...] = TEMPLATES
    window_sizes: tuple[int, ...] = (2, 3)
    window_stride: int = 1
    temperature: float = 0.07
    image_score_global_weight: float = 1.0
    smoothing_sigma: float = 0.0
    upsample_align_corners: bool = False

    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("normal_states", "abnormal_states", "templates", "window_sizes")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("normal_states", "abnormal_states", "templates"):
            phrases = getattr(self, key)
            if not phrases or any(phrase.count("{}") != 1 for phrase in phrases):
                raise ValueError(f"WinCLIPConfig.{key} must be a non-empty list of phrases with one '{{}}' each, "
                                 f"got {phrases!r}")
        if not self.window_sizes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                        for k in self.window_sizes):
            raise ValueError(f"WinCLIPConfig.window_sizes must be patch counts >= 1, got {self.window_sizes!r}")
        if isinstance(self.window_stride, bool) or not isinstance(self.window_stride, int) or self.window_stride < 1:
            raise ValueError(f"WinCLIPConfig.window_stride must be an integer >= 1, got {self.window_stride!r}")
        if not self.temperature > 0:
            raise ValueError(f"WinCLIPConfig.temperature must be > 0, got {self.temperature}")


# ----------------------------------------------------------------------------- window maths


def window_indices(grid: tuple[int, int], size: int, stride: int = 1) -> torch.Tensor:
    """Patch indices (row-major) of every ``size`` x ``size`` window sliding with ``stride``:
    (W, size * size), windows in row-major order of their top-left patch."""
    height, width = grid
    if size > height or size > width:
        raise ValueError(f"a {size}x{size}-patch window does not fit the {height}x{width} patch grid: "
                         f"use smaller WinCLIPConfig.window_sizes or larger images")
    rows = torch.arange(0, height - size + 1, stride)
    cols = torch.arange(0, width - size + 1, stride)
    top_left = (rows[:, None] * width + cols[None, :]).reshape(-1, 1)
    offsets = (torch.arange(size)[:, None] * width + torch.arange(size)[None, :]).reshape(1, -1)
    return top_left + offsets


def window_membership(indices: torch.Tensor, n_patches: int) -> torch.Tensor:
    """(W, N) 0/1 matrix: window w covers patch n."""
    membership = torch.zeros(indices.shape[0], n_patches)
    membership.scatter_(1, indices, 1.0)
    return membership


def harmonic_aggregation(window_scores: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """Per-patch harmonic mean of the scores of the windows covering it (WinCLIP Sec. 4.2):
    ``M[n] = |{w : n in w}| / sum_{w : n in w} 1 / s_w``; (B, W) scores, (W, N) membership -> (B, N)."""
    membership = membership.to(window_scores)
    counts = membership.sum(0)
    if bool((counts == 0).any()):
        raise ValueError("some patches lie in no window: choose WinCLIPConfig.window_stride so that the windows "
                         "reach every patch (stride 1 always does)")
    return counts / (window_scores.reciprocal() @ membership)


def harmonic_mean(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Element-wise harmonic mean of equally shaped score maps (the aggregation over scales)."""
    return len(maps) / torch.stack([m.reciprocal() for m in maps]).sum(0)


def anomaly_probability(embeddings: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """``ascore_0``: anomalous probability of softmax(cos / tau) over [normal, anomalous] (paper Eq. 1).

    ``embeddings`` (B, ..., C) normalised; ``text`` (2, C) or per image (B, 2, C) normalised.
    """
    text = text if text.dim() == 3 else text.unsqueeze(0).expand(embeddings.shape[0], -1, -1)
    flat = embeddings.reshape(embeddings.shape[0], -1, embeddings.shape[-1])
    logits = torch.einsum("bnc,bkc->bnk", flat, text) / temperature
    return logits.softmax(-1)[..., 1].reshape(embeddings.shape[:-1])


# ----------------------------------------------------------------------------- the model


class WinCLIP(AnomalyModel):
    """WinCLIP zero-shot on a frozen OpenCLIP ViT (no learnable parameters)."""

    family = "winclip"
    config_class = WinCLIPConfig

    def __init__(self, backbone, config: WinCLIPConfig | None = None) -> None:
        super().__init__(backbone, config or WinCLIPConfig())
        self._text_cache: dict[tuple, torch.Tensor] = {}
        self._windows: dict[tuple, list[torch.Tensor]] = {}

    @property
    def uses_product_names(self) -> bool:
        """The state words name the product (``{}``)."""
        return True

    # ------------------------------------------------------------------ text side
    def state_prompts(self, product: str | None = None) -> list[list[str]]:
        """The normal and the anomalous prompts: every state phrase x every template."""
        obj = product_phrase(product)
        config = self.config
        return [[template.format(state.format(obj)) for state in states for template in config.templates]
                for states in (config.normal_states, config.abnormal_states)]

    def _run_text(self, ids: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        ids = ids[:, : backbone.text_length(ids)].to(self.device)
        mask = backbone.text_attn_mask
        mask = mask[: ids.shape[1], : ids.shape[1]] if mask is not None else None
        x, _ = run_blocks(backbone.text_blocks, backbone.embed_text(ids), attn_mask=mask)
        return backbone.pool_text(x, ids)

    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None) -> torch.Tensor:
        """Normalised [normal, anomalous] text embeddings (2, C) of ``product`` (binary: the
        vocabulary only has to be valid)."""
        check_vocabulary(vocabulary, allow_empty=True)
        device_type = self.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        key = (product, dtype)
        if key not in self._text_cache:
            states = self.state_prompts(product)
            tokenizer = self.backbone.tokenizer
            limit = context_length(tokenizer, int(self.backbone.text.positional_embedding.shape[0]))
            check_prompts_fit(tokenizer, limit, [(name, text, "") for name, texts in zip(("normal", "anomaly"), states)
                                                 for text in texts],
                              "a WinCLIP template and state phrase", "use a shorter product name or shorter phrases")
            ids = self.backbone.tokenize([text for texts in states for text in texts])
            with torch.no_grad():
                embeddings = torch.cat([self._run_text(chunk) for chunk in ids.split(256)])
                self._text_cache[key] = state_means(embeddings, [len(texts) for texts in states]).cpu()
        return self._text_cache[key].to(self.device)

    def text_embeddings_for(self, products: Sequence[str] | None, batch: int) -> torch.Tensor:
        """(2, C) without product names, else (B, 2, C)."""
        if products is None:
            return self.encode_text()
        if len(products) != batch:
            raise ValueError(f"products gives {len(products)} names for a batch of {batch} images: one per image")
        return torch.stack([self.encode_text((), product) for product in products])

    # ------------------------------------------------------------------ image side
    def windows(self, grid: tuple[int, int]) -> list[torch.Tensor]:
        """Patch indices of every window per scale (cached per grid)."""
        if grid not in self._windows:
            self._windows[grid] = [window_indices(grid, size, self.config.window_stride)
                                   for size in self.config.window_sizes]
        return self._windows[grid]

    def window_embeddings(self, tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Class embeddings (B, W, C) of every window: the vision tower on the class token and the
        window's patch tokens only (``tokens``: (B, 1 + N, D) after ``ln_pre``)."""
        batch, _, width = tokens.shape
        n_windows, n_inside = indices.shape
        patches = tokens[:, 1:][:, indices.to(tokens.device)]  # (B, W, k*k, D)
        cls = tokens[:, :1].unsqueeze(1).expand(-1, n_windows, -1, -1)
        sequences = torch.cat([cls, patches], dim=2).reshape(batch * n_windows, 1 + n_inside, width)
        chunk = max(1, WINDOW_TOKENS_PER_CALL // (1 + n_inside))
        pooled = [self.backbone.pool_image(run_blocks(self.backbone.vision_blocks, part)[0])
                  for part in sequences.split(chunk)]
        return F.normalize(torch.cat(pooled).float(), dim=-1).reshape(batch, n_windows, -1)

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Normalised image embedding (B, C), window embeddings per scale (B, W_s, C), patch grid."""
        backbone = self.backbone
        tokens = backbone.embed_image(images.to(self.device))
        grid = backbone.grid_size(tuple(images.shape[-2:]))
        x, _ = run_blocks(backbone.vision_blocks, tokens)
        image_embedding = F.normalize(backbone.pool_image(x).float(), dim=-1)
        windows = [self.window_embeddings(tokens, indices) for indices in self.windows(grid)]
        return image_embedding, windows, grid

    def anomaly_map(self, image_score: torch.Tensor, window_scores: Sequence[torch.Tensor],
                    grid: tuple[int, int]) -> torch.Tensor:
        """Zero-shot map (B, h, w): harmonic mean over the scales of the harmonically aggregated
        window scores and the image score."""
        n_patches = grid[0] * grid[1]
        maps = [image_score[:, None].expand(-1, n_patches)]
        for scores, indices in zip(window_scores, self.windows(grid)):
            maps.append(harmonic_aggregation(scores, window_membership(indices, n_patches)))
        return harmonic_mean(maps).reshape(-1, *grid)

    def forward(self, images: torch.Tensor, vocabulary: Sequence[str] | None = None, *,
                products: Sequence[str] | None = None, text_embeddings: torch.Tensor | None = None) -> DAPOOutput:
        """Zero-shot WinCLIP on ``images`` (B, 3, H, W); one stage, whose two channels are the
        log-probabilities [log(1 - M), log M] of the zero-shot map M."""
        if text_embeddings is None:
            text_embeddings = self.text_embeddings_for(products, images.shape[0])
        image_embedding, windows, grid = self.encode_image(images)
        text = text_embeddings.to(image_embedding.device, torch.float32)
        tau = self.config.temperature
        equation = "bc,kc->bk" if text.dim() == 2 else "bc,bkc->bk"
        global_logits = torch.einsum(equation, image_embedding, text) / tau
        image_score = global_logits.softmax(-1)[:, 1]
        window_scores = [anomaly_probability(w, text, tau) for w in windows]
        score_map = self.anomaly_map(image_score, window_scores, grid)
        tiny = torch.finfo(score_map.dtype).tiny
        stage = torch.stack([(1.0 - score_map).clamp_min(tiny).log(), score_map.clamp_min(tiny).log()], dim=1)
        return DAPOOutput(global_logits, global_logits, [stage], image_embedding, text)


def winclip_recipe() -> TrainConfig:
    """WinCLIP is training-free; the recipe is recorded with evaluations only."""
    return TrainConfig()


register(Method("winclip", WinCLIP, WinCLIPConfig, winclip_recipe, training_free=True, paper=PAPER,
                table3="WinCLIP"))
