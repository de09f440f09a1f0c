"""Two-stage training in the release's order (AA-CLIP, ``train.py:320-357`` of Mwxinnn/AA-CLIP):
the text adapters first, then the vision adapters from their weights (docs/methods/aaclip.md).
The registry's ``aaclip`` trains both stages jointly in the one loop every method shares."""

from __future__ import annotations

from pathlib import Path

import torch

from dapo.engine.train import train
from dapo.methods.aaclip import aaclip_recipe, text_stage_recipe
from dapo.methods.recipe import TrainConfig
from dapo.methods.registry import make_model


def train_two_stage(backbone, dataset, out_dir: str | Path, *, seed: int = 0, text: TrainConfig | None = None,
                    image: TrainConfig | None = None, **train_kwargs):
    """The release's order (``train.py:320-357``): stage 1 (text adapters) into ``out_dir/text``,
    then stage 2 (vision adapters, anchors fixed) from its weights into ``out_dir/image``.
    Returns ``(model, result)`` of stage 2, whose checkpoints hold both stages' weights."""
    out_dir = Path(out_dir)
    text = text or text_stage_recipe().with_overrides(seed=seed)
    image = image or aaclip_recipe().with_overrides(seed=seed)
    first = make_model("aaclip", backbone, seed=seed, stage="text")
    train(first, dataset, out_dir / "text", text, **train_kwargs)
    second = make_model("aaclip", backbone, seed=seed, stage="image")
    with torch.no_grad():
        learned = first.learnable_parameters()
        for name, parameter in second.learnable_parameters().items():
            parameter.copy_(learned[name])
    return second, train(second, dataset, out_dir / "image", image, **train_kwargs)
