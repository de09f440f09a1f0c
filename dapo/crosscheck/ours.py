"""Our side of a cross-check: the same quantities from a preset of :mod:`dapo.methods`.

Everything runs in fp32 on the CPU (the releases' precision: ``train.py:216``), on the compact
backbone at its native size (no positional-embedding resize on either side).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from dapo.clip.backbone import Backbone, load_backbone
from dapo.engine.train import make_optimizer, training_step
from dapo.methods import make_model, training_for
from dapo.methods.dapo.losses import config_probabilities, dice_loss, focal_loss, loss_terms
from dapo.methods.dapo.model import DAPO
from dapo.methods.dapo.prompts import defect_phrase
from dapo.methods.scoring import predict

COMPACT = "dapo-compact"


def compact_backbone() -> Backbone:
    """The compact synthetic CLIP (``dapo/assets/dapo-compact.*``) at its native size."""
    from open_clip import get_model_config

    from dapo.clip.backbone import register_asset_configs

    register_asset_configs()
    size = get_model_config(COMPACT)["vision_cfg"]["image_size"]
    return load_backbone(COMPACT, "synthetic", image_size=size)


def vocabulary_for(words: Sequence[str]) -> tuple[str, ...]:
    """Defect names whose prompt words are exactly ``words`` (a release's literal state words)."""
    names = tuple(word.replace(" ", "_") for word in words)
    for name, word in zip(names, words):
        if defect_phrase(name) != word:
            raise ValueError(f"our prompt words for {name!r} are {defect_phrase(name)!r}, not the release's {word!r}: "
                             f"the knowledge base renames it; the cross-check needs literal words")
    return names


def build(preset: str, backbone: Backbone, parameters: Mapping[str, torch.Tensor] | None = None) -> DAPO:
    """``preset`` on ``backbone`` with ``parameters`` (our names) copied into its learned tensors."""
    model = make_model(preset, backbone)
    if parameters is not None:
        own = model.learnable_parameters()
        if set(own) != set(parameters):
            raise KeyError(f"preset {preset!r} learns {sorted(own)}, the fixed parameters are {sorted(parameters)}")
        with torch.no_grad():
            for name, value in parameters.items():
                own[name].copy_(value)
    return model


def forward_quantities(model: DAPO, images: torch.Tensor, words: Sequence[str]) -> dict[str, torch.Tensor]:
    """Token ids, embeddings, per-stage logits and probabilities, final map and image score."""
    vocabulary = vocabulary_for(words)
    size = tuple(images.shape[-2:])
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        n_prompts = model.context.n_prompts if model.context is not None else 1
        out["tokens/forward"] = model._prompt_ids(vocabulary).repeat_interleave(n_prompts, dim=0)
        embedding, patches, _ = model.encode_image(images)
        out["image/embedding"] = embedding
        for i, patch in enumerate(patches):
            out[f"patch/tap{i + 1}"] = patch
        output = model(images, vocabulary)
        out["text/state_embeddings"] = output.text_embeddings
        for i, logits in enumerate(output.stage_logits):
            out[f"stage{i + 1}/logits"] = logits
            out[f"stage{i + 1}/probs"] = config_probabilities(model.config, logits, size)
        prediction = predict(model, output, size, len(vocabulary))
        # the release sums the stage maps (test.py:343), ours averages them (FIDELITY row 22)
        out["map/anomaly_sum_over_stages"] = prediction.anomaly_map * len(output.stage_logits)
        out["score/image"] = prediction.image_score
    return out


def training_quantities(model: DAPO, preset: str, batch: dict, words: Sequence[str], steps: int) -> dict:
    """Loss terms per step, per-stage terms and gradients of the first step, weights after ``steps``.

    ``batch``: ``images``, ``labels``, ``masks`` (B, 1, S, S) and ``type_ids`` (1-based into ``words``).
    """
    vocabulary = vocabulary_for(words)
    config = model.config
    type_masks = (batch["masks"][:, 0] * batch["type_ids"].view(-1, 1, 1)).long()
    collated = {"image": batch["images"], "label": batch["labels"], "type_mask": type_masks}
    params = model.learnable_parameters()
    optimizer = make_optimizer(list(params.values()), training_for(preset))
    out: dict = {"tokens/train": model._prompt_ids(vocabulary).repeat_interleave(model.context.n_prompts, dim=0)}
    with torch.no_grad():
        output = model(batch["images"], vocabulary)
        out["train/global_logits"] = output.global_logits
        normal = (type_masks == 0).float()
        for i, logits in enumerate(output.stage_logits):
            probs = config_probabilities(config, logits, tuple(type_masks.shape[-2:]))
            out[f"loss/step0/stage{i + 1}/focal"] = focal_loss(probs, type_masks, config.focal_gamma, config.focal_smooth)
            out[f"loss/step0/stage{i + 1}/dice_normal"] = dice_loss(probs[:, 0], normal)
            out[f"loss/step0/stage{i + 1}/dice_abnormal"] = dice_loss(1.0 - probs[:, 0], 1.0 - normal)
    for step in range(steps):
        with torch.no_grad():
            terms = loss_terms(model(batch["images"], vocabulary), batch["labels"], type_masks, config)
        logged = training_step(model, optimizer, collated, vocabulary, precision="fp32")
        if abs(logged["total"] - float(terms["total"])) > 1e-4 * max(1.0, abs(logged["total"])):
            raise RuntimeError(f"our training step's loss {logged['total']} differs from its own forward "
                               f"{float(terms['total'])}: the step is not deterministic")
        out[f"loss/step{step}/ce"] = torch.tensor(logged["global"], dtype=torch.float64)
        out[f"loss/step{step}/local_weighted"] = torch.tensor(config.lam * logged["local"], dtype=torch.float64)
        out[f"loss/step{step}/total"] = torch.tensor(logged["total"], dtype=torch.float64)
        if step == 0:
            for name, p in params.items():
                out[f"grad/{name}"] = p.grad.detach().clone()
    for name, p in params.items():
        out[f"weights/{name}"] = p.detach().clone()
    return out
