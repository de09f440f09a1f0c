"""AdaCLIP (Cao et al., ECCV 2024, "AdaCLIP: Adapting CLIP with hybrid learnable prompts for
zero-shot anomaly detection").

Release read for facts: github caoyunkang/AdaCLIP at commit e27ee32b (``method/adaclip.py``,
``method/trainer.py``, ``train.py``, ``loss.py``). What it computes:

* **hybrid prompts** in both encoders for the first ``prompt_depth`` layers: per layer
  ``P_l(x) = S_l + D(x)``, static learnable tokens ``S_l`` (N(0, 0.02^2)) plus dynamic tokens
  ``D(x)``, one linear map per token of the plain CLIP image embedding of ``x``
  (``ProjectLayer``; the embedding from a prompt-free pass without gradient). Vision: appended
  after the patch tokens at layer 1, rewritten at layers 2..depth, carried on after, never
  tapped. Text: written over the ``prompt_length`` tokens after the start token at layers
  2..depth (the layer-1 static tokens are built but unused, ``adaclip.py:81-88``);
* **projections**: one trainable linear map per tapped layer from the raw patch tokens (no
  ``ln_post``) to the joint space, and one on the prompted image embedding (``cls_token_layer``);
* **text**: the mean of the normalised embeddings of a prompt ensemble (4 templates x 7 normal
  / 5 abnormal state phrases naming the product), run with the image's dynamic prompts;
* **maps**: ``100 cos(p_ij, t_s)`` per tapped layer; **image score**: ``softmax(100 cos(z, t_s))``
  with ``z`` the hybrid semantic fusion (HSF) of the image embedding and the centre of k-means
  clusters of the most abnormal patch tokens (:func:`hsf_centre`);
* **loss**: focal on the image probabilities + per layer (focal + Dice(abnormal) + Dice(normal))
  of the softmax of the upsampled maps (``trainer.py:126-135``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from dapo.clip.backbone import is_causal_mask, prepared_blocks
from dapo.clip.vocabulary import check_prompts_fit, check_vocabulary, context_length
from dapo.methods.cocoop import seeded_linear
from dapo.methods.contract import AnomalyModel, DAPOOutput, MethodConfig
from dapo.methods.dapo.losses import dice_loss, focal_loss, stage_probabilities
from dapo.methods.recipe import TrainConfig
from dapo.methods.registry import Method, register
from dapo.util.precision import compute_dtype

PROMPT_TYPES = ("", "S", "D", "SD")
PROMPT_BRANCHES = ("", "V", "L", "VL")
HSF_VARIANTS = ("release", "paper")


@dataclass(frozen=True)
class AdaCLIPConfig(MethodConfig):
    """AdaCLIP with its release defaults (``train.py`` argparse defaults, ``adaclip.py``).

    prompt_length, prompt_depth:
        5 tokens per prompted layer, the first 4 layers of each encoder (``train.py:164-165``).
        The depth is a layer count, capped at each encoder's depth (the compact backbone's
        text tower has 4 layers).
    prompt_type, prompt_branch:
        ``"SD"`` static + dynamic prompts in ``"VL"`` both encoders (``train.py:166-169``).
    use_hsf, k_clusters, hsf_tokens_per_cluster, hsf_alpha:
        Hybrid semantic fusion on (``train.py:171-173``): the ``5 k`` most abnormal patch tokens
        (``adaclip.py:238``), ``k = 20`` k-means clusters, image feature
        ``normalize(0.2 centre + 0.8 z)`` (``adaclip.py:517-521``). Fewer patches than clusters
        (tiny towers) use one cluster per token.
    hsf_variant:
        ``"release"``: the released HSF, which the release calls an upgrade of the paper's
        (``adaclip.py:233-286``); ``"paper"``: the paper's, kept commented out in the release
        (``adaclip.py:288-330``): k-means of all patches (layer-averaged tokens), the centroid of
        the cluster with the highest mean anomaly probability (:func:`hsf_paper_centre`).
    kmeans_iterations:
        Lloyd iterations at most (scikit-learn's ``KMeans`` default ``max_iter=300``).
    logit_scale:
        Fixed 100 for maps and image score (``adaclip.py:513, 525``).
    templates, normal_states, abnormal_states:
        The prompt ensemble of ``TextEmbebddingLayer`` (``adaclip.py:151-160``); ``{}`` is the
        product name (``-`` and ``_`` become spaces), ``"object"`` without one.
    smoothing_sigma, softmax_before_upsample, upsample_align_corners, image_score_global_weight:
        Test path: per-layer logits upsampled (bilinear, ``align_corners=True``), averaged, then
        softmax (``adaclip.py:529-541``); Gaussian sigma 4 (``trainer.py:194``); the image score
        is the HSF score alone.
    """

    name: str = "AdaCLIP"
    prompt_length: int = 5
    prompt_depth: int = 4
    prompt_type: str = "SD"
    prompt_branch: str = "VL"
    use_hsf: bool = True
    k_clusters: int = 20
    hsf_tokens_per_cluster: int = 5
    hsf_alpha: float = 0.2
    hsf_variant: str = "release"
    kmeans_iterations: int = 300
    logit_scale: float = 100.0
    templates: tuple[str, ...] = ("a bad photo of a {}.", "a low resolution photo of the {}.",
                                  "a bad photo of the {}.", "a cropped photo of the {}.")
    normal_states: tuple[str, ...] = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                                      "{} without defect", "{} without damage")
    abnormal_states: tuple[str, ...] = ("damaged {}", "broken {}", "{} with flaw", "{} with defect",
                                        "{} with damage")
    object_word: str = "object"
    smoothing_sigma: float = 4.0
    softmax_before_upsample: bool = False
    upsample_align_corners: bool = True
    image_score_global_weight: float = 1.0

    TUPLE_FIELDS = ("templates", "normal_states", "abnormal_states")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("templates", "normal_states", "abnormal_states"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
            if not getattr(self, key) or not all("{}" in text for text in getattr(self, key)):
                raise ValueError(f"AdaCLIPConfig.{key} must be a non-empty list of texts with a '{{}}' placeholder")
        if self.prompt_type not in PROMPT_TYPES:
            raise ValueError(f"AdaCLIPConfig.prompt_type={self.prompt_type!r}: expected one of {PROMPT_TYPES}")
        if self.prompt_branch not in PROMPT_BRANCHES:
            raise ValueError(f"AdaCLIPConfig.prompt_branch={self.prompt_branch!r}: expected one of {PROMPT_BRANCHES}")
        if self.prompt_branch and not self.prompt_type:
            raise ValueError("AdaCLIPConfig: a prompted branch needs prompt_type 'S', 'D' or 'SD' "
                             "(adaclip.py:77-79)")
        for key in ("prompt_length", "prompt_depth", "k_clusters", "hsf_tokens_per_cluster", "kmeans_iterations"):
            if getattr(self, key) < 1:
                raise ValueError(f"AdaCLIPConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.hsf_variant not in HSF_VARIANTS:
            raise ValueError(f"AdaCLIPConfig.hsf_variant={self.hsf_variant!r}: expected one of {HSF_VARIANTS}")
        if not 0.0 <= self.hsf_alpha <= 1.0:
            raise ValueError(f"AdaCLIPConfig.hsf_alpha must lie in [0, 1], got {self.hsf_alpha}")
        if self.logit_scale <= 0:
            raise ValueError(f"AdaCLIPConfig.logit_scale must be > 0, got {self.logit_scale}")


@dataclass(frozen=True)
class EnsembleIds:
    """What :meth:`AdaCLIP.encode_text` can cache: the ensemble's token ids (P, L), normal prompts
    first, and the normal-prompt count. The embeddings depend on the image (dynamic text
    prompts), so ``forward`` finishes them; ``float()`` returns the object (``Predictor`` calls it)."""

    ids: torch.Tensor
    n_normal: int

    def float(self) -> EnsembleIds:
        return self


class FrozenLayers:
    """The frozen blocks of one encoder run one at a time (prompts are rewritten between them):
    :class:`dapo.clip.backbone.FrozenBlock` where possible (weights held in the compute dtype),
    the block modules otherwise."""

    def __init__(self, blocks: nn.ModuleList, like: torch.Tensor, attn_mask: torch.Tensor | None = None) -> None:
        self.blocks = blocks
        self.dtype = compute_dtype(like)
        self.prepared = prepared_blocks(blocks, self.dtype)
        self.attn_mask = attn_mask
        self.causal = is_causal_mask(attn_mask)
        self.mask = None if self.causal or attn_mask is None else attn_mask.to(self.dtype)
        device_type = like.device.type
        self.no_autocast = (lambda: torch.autocast(device_type, enabled=False)) \
            if torch.is_autocast_enabled(device_type) else contextlib.nullcontext

    def __len__(self) -> int:
        return len(self.blocks)

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` (0-based) on ``x``."""
        if self.prepared is None:
            return self.blocks[index](x, attn_mask=self.attn_mask)
        with self.no_autocast():
            return self.prepared[index](x.to(self.dtype), self.mask, self.causal)


def kmeans_labels(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Cluster labels (B, N) of k-means on every batch element's points (B, N, D).

    k-means++ seeding (one draw per centre) from ``generator`` and at most ``iterations`` Lloyd
    steps, stopped when no label changes; an emptied cluster keeps its centre. Runs in float64
    on the CPU (the release runs scikit-learn's ``KMeans`` there, ``adaclip.py:263``).
    """
    points = points.detach().to("cpu", torch.float64)
    batch, n, _ = points.shape
    rows = torch.arange(batch)
    centres = [points[rows, torch.randint(n, (batch,), generator=generator)]]
    nearest = ((points - centres[0][:, None]) ** 2).sum(-1)
    for _ in range(1, k):
        weights = nearest.clamp_min(0)
        weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, torch.ones_like(weights))
        chosen = points[rows, torch.multinomial(weights, 1, generator=generator).squeeze(1)]
        centres.append(chosen)
        nearest = torch.minimum(nearest, ((points - chosen[:, None]) ** 2).sum(-1))
    centres = torch.stack(centres, dim=1)
    labels = None
    for _ in range(iterations):
        new = torch.cdist(points, centres).argmin(-1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        onehot = F.one_hot(labels, k).to(points.dtype)
        counts = onehot.sum(1)
        sums = onehot.transpose(1, 2) @ points
        centres = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centres)
    return labels


def hsf_centre(tokens: list[torch.Tensor], labels: torch.Tensor, k: int) -> torch.Tensor:
    """The release's HSF centre (``adaclip.py:260-284``), normalised: (B, C).

    ``tokens``: the selected patch tokens of every tapped layer (B, N, C); ``labels`` (B, N):
    each selected patch's cluster. A cluster's centre is the mean of its patches' tokens over
    all layers; the result is the mean of the (non-empty) cluster centres.
    """
    per_patch = torch.stack(tokens).mean(0)  # mean over layers of each patch = its share of a cluster mean
    onehot = F.one_hot(labels.to(per_patch.device), k).to(per_patch.dtype)  # (B, N, k)
    counts = onehot.sum(1)  # (B, k)
    centres = (onehot.transpose(1, 2) @ per_patch) / counts.clamp_min(1)[..., None]
    present = (counts > 0).to(per_patch.dtype)
    centre = (centres * present[..., None]).sum(1) / present.sum(1, keepdim=True)
    return F.normalize(centre, dim=-1)


def hsf_paper_centre(tokens: torch.Tensor, abnormal: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The paper's HSF centre (the release's commented-out version, ``adaclip.py:288-330``), normalised:
    (B, C). ``tokens`` (B, N, C): every patch's token averaged over the layers; ``abnormal`` (B, N):
    its anomaly probability; ``labels`` (B, N): its cluster. The centre is the mean token of the
    cluster with the highest mean anomaly probability."""
    onehot = F.one_hot(labels.to(tokens.device), k).to(tokens.dtype)  # (B, N, k)
    counts = onehot.sum(1)
    scores = (onehot * abnormal.to(tokens.dtype).unsqueeze(-1)).sum(1) / counts.clamp_min(1)
    scores = scores.masked_fill(counts == 0, float("-inf"))
    chosen = onehot.gather(2, scores.argmax(1)[:, None, None].expand(-1, onehot.shape[1], 1))  # (B, N, 1)
    centre = (chosen * tokens).sum(1) / chosen.sum(1)
    return F.normalize(centre, dim=-1)


class AdaCLIP(AnomalyModel):
    """AdaCLIP on a frozen OpenCLIP ViT: hybrid static + dynamic prompts, projections, HSF (binary)."""

    family = "adaclip"
    config_class = AdaCLIPConfig

    def __init__(self, backbone, config: AdaCLIPConfig | None = None) -> None:
        config = config or AdaCLIPConfig()
        super().__init__(backbone, config)
        device, generator = self.device, self.seeded_generator()
        depth = {"L": min(config.prompt_depth, len(backbone.text_blocks)),
                 "V": min(config.prompt_depth, len(backbone.vision_blocks))}
        widths = {"L": backbone.text_width, "V": backbone.vision_width}
        length, embed = config.prompt_length, backbone.embed_dim
        self.depth = {branch: depth[branch] if branch in config.prompt_branch else 0 for branch in "LV"}
        self.text_static = self.vision_static = self.text_dynamic = self.vision_dynamic = None
        for branch, static, dynamic in (("L", "text_static", "text_dynamic"), ("V", "vision_static", "vision_dynamic")):
            if branch not in config.prompt_branch:
                continue
            if "S" in config.prompt_type:  # adaclip.py:48-55: N(0, 0.02^2), one (length, width) per layer
                tokens = torch.randn(self.depth[branch], length, widths[branch], generator=generator) * 0.02
                setattr(self, static, nn.Parameter(tokens))
            if "D" in config.prompt_type:  # adaclip.py:387-397: `length` linear maps of the image embedding
                setattr(self, dynamic, seeded_linear(embed, length * widths[branch], generator))
        self.patch_projections = nn.ModuleList(
            seeded_linear(backbone.vision_width, embed, generator) for _ in backbone.tap_layers)  # adaclip.py:375-379
        self.cls_projection = seeded_linear(embed, embed, generator)  # adaclip.py:381-385
        self._ids_cache: dict[str, EnsembleIds] = {}
        self.to(device)

    # ------------------------------------------------------------------ properties
    @property
    def uses_product_names(self) -> bool:
        """The prompt ensemble names the product."""
        return True

    # ------------------------------------------------------------------ text side
    def class_word(self, product: str | None) -> str:
        return product.replace("_", " ").replace("-", " ") if product else self.config.object_word

    def ensemble_ids(self, product: str | None) -> EnsembleIds:
        """Token ids of the ensemble for ``product`` (cached); refuses prompts that would be cut."""
        name = self.class_word(product)
        if name not in self._ids_cache:
            config = self.config
            states = [[template.format(state.format(name)) for state in group for template in config.templates]
                      for group in (config.normal_states, config.abnormal_states)]
            limit = context_length(self.backbone.tokenizer, int(self.backbone.text.positional_embedding.shape[0]))
            check_prompts_fit(self.backbone.tokenizer, limit,
                              [(state, text, name) for state, texts in zip(("normal", "abnormal"), states)
                               for text in texts], "the template and state words",
                              "use a shorter product name or shorter templates")
            ids = self.backbone.tokenize(states[0] + states[1])
            n_tokens = (ids > 0).sum(1) - 2  # words between the start and end tokens
            if self.depth["L"] > 1 and int(n_tokens.min()) < self.config.prompt_length:
                raise ValueError(f"AdaCLIP text prompts overwrite {self.config.prompt_length} tokens after the start "
                                 f"token, but a prompt of {name!r} has only {int(n_tokens.min())}: use longer "
                                 f"templates or a smaller prompt_length")
            self._ids_cache[name] = EnsembleIds(ids, len(states[0]))
        return self._ids_cache[name]

    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None) -> EnsembleIds:
        """The cacheable text side: the ensemble ids of ``product`` (binary: the vocabulary is only checked)."""
        check_vocabulary(vocabulary, allow_empty=True)
        return self.ensemble_ids(product)

    def layer_prompts(self, branch: str, dynamic: torch.Tensor | None, batch: int) -> list[torch.Tensor]:
        """Per prompted layer the (B, length, width) tokens ``S_l + D(x)`` (``adaclip.py:69-76, 104-111``)."""
        static = self.text_static if branch == "L" else self.vision_static
        prompts = []
        for layer in range(self.depth[branch]):
            parts = [p for p in (static[layer].unsqueeze(0) if static is not None else None, dynamic) if p is not None]
            prompts.append(sum(parts[1:], parts[0]).expand(batch, -1, -1))
        return prompts

    def encode_ensemble(self, ensembles: Sequence[EnsembleIds], text_dynamic: torch.Tensor | None
                        ) -> torch.Tensor:
        """Normalised state embeddings (B, 2, C) of every image's ensemble (one per image) in one
        text-encoder call, the image's prompts written after the start token at layers 2..depth."""
        backbone = self.backbone
        batch, n_normal = len(ensembles), ensembles[0].n_normal
        ids = torch.cat([ensemble.ids for ensemble in ensembles])
        ids = ids[:, : backbone.text_length(ids)].to(self.device)
        n_prompts, length = ids.shape[0] // batch, self.config.prompt_length
        x = backbone.embed_text(ids)
        prompts = self.layer_prompts("L", text_dynamic, batch)
        mask = backbone.text_attn_mask
        layers = FrozenLayers(backbone.text_blocks, x, mask[: ids.shape[1], : ids.shape[1]] if mask is not None else None)
        for index in range(len(layers)):
            if 0 < index < len(prompts):  # adaclip.py:81-88: not at the first layer
                tokens = prompts[index].repeat_interleave(n_prompts, dim=0).to(x.dtype)
                x = torch.cat([x[:, :1], tokens, x[:, 1 + length:]], dim=1)
            x = layers(index, x)
        pooled = F.normalize(backbone.pool_text(x, ids).float(), dim=-1).reshape(batch, n_prompts, -1)
        states = torch.stack([pooled[:, :n_normal].mean(1), pooled[:, n_normal:].mean(1)], dim=1)
        return F.normalize(states, dim=-1)  # adaclip.py:223-225, 206

    # ------------------------------------------------------------------ image side
    def plain_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """The prompt-free CLIP image embedding (B, C), without gradient (``adaclip.py:405-408``)."""
        backbone = self.backbone
        with torch.no_grad():
            x = backbone.embed_image(images)
            layers = FrozenLayers(backbone.vision_blocks, x)
            for index in range(len(layers)):
                x = layers(index, x)
            return backbone.pool_image(x)

    def encode_image(self, images: torch.Tensor, vision_dynamic: torch.Tensor | None
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Prompted image embedding (B, C) and raw patch tokens at the tapped layers (B, h*w, width):
        prompts appended after the patches at layer 1, rewritten at layers 2..depth (``adaclip.py:117-137``)."""
        backbone = self.backbone
        x = backbone.embed_image(images)
        prompts = self.layer_prompts("V", vision_dynamic, images.shape[0])
        n = self.config.prompt_length if prompts else 0
        layers = FrozenLayers(backbone.vision_blocks, x)
        taps, tapped = set(backbone.tap_layers), []
        for index in range(len(layers)):
            if index < len(prompts):
                x = torch.cat([x[:, : x.shape[1] - (n if index else 0)], prompts[index].to(x.dtype)], dim=1)
            x = layers(index, x)
            if index + 1 in taps:
                tapped.append(x[:, 1: x.shape[1] - n])
        return backbone.pool_image(x[:, : x.shape[1] - n]), tapped

    def fuse(self, image_embedding: torch.Tensor, patches: list[torch.Tensor], maps: list[torch.Tensor]
             ) -> torch.Tensor:
        """HSF (``adaclip.py:241-286, 516-521``): ``normalize(alpha c + (1 - alpha) z)`` with ``c`` the
        :func:`hsf_centre` of k-means clusters of the ``5 k`` patches most abnormal on the mean map
        (``hsf_variant="paper"``: :func:`hsf_paper_centre` of all patches)."""
        config = self.config
        abnormal = torch.stack(maps).mean(0).softmax(dim=-1)[..., 1]  # (B, N)
        generator = torch.Generator().manual_seed(config.seed)
        if config.hsf_variant == "paper":
            tokens = torch.stack(patches).mean(0)
            k = min(config.k_clusters, tokens.shape[1])
            centre = hsf_paper_centre(tokens, abnormal, kmeans_labels(tokens, k, config.kmeans_iterations, generator), k)
            return F.normalize(config.hsf_alpha * centre + (1.0 - config.hsf_alpha) * image_embedding, dim=-1)
        n_selected = min(abnormal.shape[1], config.k_clusters * config.hsf_tokens_per_cluster)
        index = abnormal.topk(n_selected, dim=1).indices
        selected = [p.gather(1, index.unsqueeze(-1).expand(-1, -1, p.shape[-1])) for p in patches]
        k = min(config.k_clusters, n_selected)
        labels = kmeans_labels(torch.cat(selected, dim=-1), k, config.kmeans_iterations, generator)
        centre = hsf_centre(selected, labels, k)
        return F.normalize(config.hsf_alpha * centre + (1.0 - config.hsf_alpha) * image_embedding, dim=-1)

    def forward(self, images: torch.Tensor, vocabulary: Sequence[str] | None = None, *,
                products: Sequence[str] | None = None, text_embeddings: EnsembleIds | None = None) -> DAPOOutput:
        """Score ``images``: maps per tapped layer and the HSF image logits (K = 1 whatever the vocabulary).

        ``text_embeddings`` (from :meth:`encode_text`) fixes the product of every image;
        otherwise ``products`` names each image's product (``None``: ``object_word``).
        """
        images = images.to(self.device)
        batch = images.shape[0]
        if text_embeddings is None:
            check_vocabulary(vocabulary or (), allow_empty=True)
            if products is not None and len(products) != batch:
                raise ValueError(f"products names {len(products)} images, the batch has {batch}")
            names = list(products) if products is not None else [None] * batch
        else:
            names = None
        plain = self.plain_embedding(images) if "D" in self.config.prompt_type and self.config.prompt_branch else None

        def dynamic(layer: nn.Linear | None, width: int) -> torch.Tensor | None:
            return None if layer is None else layer(plain.to(layer.weight.dtype)).view(batch, -1, width)

        vision_dynamic = dynamic(self.vision_dynamic, self.backbone.vision_width)
        text_dynamic = dynamic(self.text_dynamic, self.backbone.text_width)
        pooled, tapped = self.encode_image(images, vision_dynamic)
        ensembles = [text_embeddings] * batch if names is None else [self.ensemble_ids(name) for name in names]
        text = self.encode_ensemble(ensembles, text_dynamic)
        patches = [F.normalize(projection(tokens).float(), dim=-1)
                   for projection, tokens in zip(self.patch_projections, tapped)]
        image_embedding = F.normalize(self.cls_projection(pooled).float(), dim=-1)
        scale = self.config.logit_scale
        maps = [scale * torch.einsum("bnc,bkc->bnk", p, text) for p in patches]
        if self.config.use_hsf:
            image_embedding = self.fuse(image_embedding, patches, maps)
        global_logits = scale * torch.einsum("bc,bkc->bk", image_embedding, text)
        h, w = self.backbone.grid_size(tuple(images.shape[-2:]))
        stage_logits = [m.transpose(1, 2).reshape(batch, -1, h, w) for m in maps]
        return DAPOOutput(global_logits, global_logits, stage_logits, image_embedding, text)

    # ------------------------------------------------------------------ loss and scoring
    def loss_terms(self, output: DAPOOutput, labels: torch.Tensor, type_masks: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """``trainer.py:126-135``: focal on the image probabilities (``global``) + per layer focal +
        Dice(abnormal) + Dice(normal) of the softmax of the upsampled maps, summed (``local``)."""
        device = output.global_logits.device
        labels, masks = labels.to(device).long(), (type_masks.to(device) > 0).long()
        g = focal_loss(output.global_logits.float().softmax(dim=-1), labels, smooth=1e-5)
        size = tuple(masks.shape[-2:])
        local = output.global_logits.new_zeros(())
        for logits in output.stage_logits:
            probs = stage_probabilities(logits, size, softmax_first=False, align_corners=True)
            local = local + focal_loss(probs, masks, smooth=1e-5) + dice_loss(probs[:, 1], masks) \
                + dice_loss(probs[:, 0], 1 - masks)
        return {"global": g, "local": local, "total": g + local}

    def predict(self, output: DAPOOutput, size: tuple[int, int], n_defects: int):
        """The release's test path: the layers' logits averaged, then upsampled and softmaxed
        (``adaclip.py:536-541``), through :func:`dapo.methods.scoring.predict`."""
        from dapo.methods.scoring import predict

        merged = replace(output, stage_logits=[torch.stack(output.stage_logits).mean(0)])
        return predict(self, merged, size, n_defects)


def adaclip() -> AdaCLIPConfig:
    """AdaCLIP with the release's defaults."""
    return AdaCLIPConfig()


def adaclip_recipe() -> TrainConfig:
    """``train.py``: lr 0.01, betas (0.5, 0.999) (``trainer.py:87``), batch 1 (the only size it
    runs, ``train.py:177-179``), 5 epochs (``train.py:155-157``). Adam stands for its AdamW (the
    companion's recipes have no decoupled weight decay; AdamW's default is 0.01)."""
    return TrainConfig(lr=0.01, betas=(0.5, 0.999), batch_size=1, epochs=5)


register(Method("adaclip", AdaCLIP, adaclip, adaclip_recipe, table3="AdaCLIP",
                paper="Cao et al., AdaCLIP: adapting CLIP with hybrid learnable prompts for zero-shot anomaly "
                      "detection, ECCV 2024"))
