"""The DAPO cross-check: ``dapo_official`` (and any DAPO-family preset) against the DAPO release.

Release: ``boschresearch/defect-aware-prompt-optimization``. Set-up on the compact backbone
(8 vision layers, 4 text layers): taps 2, 4, 6, 8 (our proportional taps, the release's
``--feature_layers`` given as a list), vision depth 8 (the release cannot run a depth below the
layer count: ``open_clip/transformer.py:419-423``), text depth 4 = one deep-token set per text
layer, 5 context tokens, 10 prompts, 4 deep tokens per layer; the release's own word lists
(``test.py:46-49`` for inference, ``train.py:353-358`` for training); 5 Adam steps on one batch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dapo.clip.backbone import ASSETS_DIR
from dapo.crosscheck import ours
from dapo.crosscheck.compare import compare
from dapo.crosscheck.driver import CheckResult, check_release_path, release_commit, release_quantities, run_release_side
from dapo.crosscheck.inputs import synthetic_batch
from dapo.crosscheck.mapping import dapo_to_release, release_to_dapo

#: Absolute tolerance of every quantity (fp32 on both sides; the order of reductions differs).
TOLERANCE = 1e-5
#: Loss values are O(10-100): 1e-4 absolute is 1e-6 relative.
TOLERANCES = {"loss/": 1e-4}
STEPS = 5
LR = 1e-3  # train.py:446 (and our TrainConfig.lr)


def training_word_indices(test_words: list[str], train_words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where our training-word map (:data:`dapo.data.training_words.DAPO_MVTEC_TRAINING_WORDS`) sends each
    of the release's test words in its training list (-1: not there), and the release's own
    positions (its two lists are index-aligned: ``test.py:46-49``, ``train.py:353-358``)."""
    from dapo.data.training_words import DAPO_MVTEC_TRAINING_WORDS

    mapped = [DAPO_MVTEC_TRAINING_WORDS.get(word, word) for word in test_words]
    ours_index = torch.tensor([train_words.index(w) if w in train_words else -1 for w in mapped])
    return ours_index, torch.arange(len(train_words))


def fixed_parameters(backbone) -> dict[str, torch.Tensor]:
    """The learned parameters both sides start from: ``dapo_official``'s seeded initialisation (seed 0)."""
    return {name: p.detach().clone() for name, p in ours.build("dapo_official", backbone).learnable_parameters().items()}


def run(release_path: str | Path, preset: str = "dapo_official", *, steps: int = STEPS,
        tolerance: float = TOLERANCE) -> CheckResult:
    """Run both sides and compare every quantity; ``preset`` is ours (``dapo`` = negative control)."""
    path = check_release_path("dapo", release_path)
    backbone = ours.compact_backbone()
    parameters = fixed_parameters(backbone)
    model = ours.build(preset, backbone, parameters)
    config = model.config
    size = backbone.image_size
    batch = synthetic_batch(size)
    from open_clip import get_model_config

    text_cfg = get_model_config(ours.COMPACT)["text_cfg"]
    spec = {
        "model_name": ours.COMPACT,
        "model_config": str(ASSETS_DIR / f"{ours.COMPACT}.json"),
        "weights": str(ASSETS_DIR / f"{ours.COMPACT}.safetensors"), "image_size": size, "feature_layers": list(backbone.tap_layers),
        "vision_depth": len(backbone.vision_blocks), "vision_tokens": config.vision_deep_tokens,
        "text_depth": len(backbone.text_blocks), "layer_tokens": config.text_deep_tokens, "n_ctx": config.n_ctx,
        "prompt_count": config.n_prompts, "context_length": int(text_cfg["context_length"]), "steps": steps,
        "lr": LR, "parameters": dapo_to_release(parameters), **batch,
    }
    raw = run_release_side("dapo", path, spec)
    theirs, facts = release_quantities(raw, release_to_dapo)
    side = ours.forward_quantities(model, batch["images"], facts["words/forward"])
    side.update(ours.training_quantities(ours.build(preset, backbone, parameters), preset, batch,
                                         facts["words/train"], steps))
    side["words/train_index"], theirs["words/train_index"] = training_word_indices(
        facts["words/forward"], facts["words/train"])
    rows = compare(side, theirs, tolerance, TOLERANCES)
    return CheckResult("dapo", preset, release_commit(path), rows, facts)
