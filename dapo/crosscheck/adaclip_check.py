"""The AdaCLIP cross-check: the ``adaclip`` method against ``caoyunkang/AdaCLIP``.

Both sides run the compact backbone (GELU: the release's CLIP copy takes ``quick_gelu`` as an
argument, ``method/clip_model.py:146``) at its native 128 px with the release's defaults scaled to
it: taps 2, 4, 6, 8 (``train.py:46-49``: quarters of the depth), 5 prompt tokens in the first 4
layers of both towers (``train.py:164-169``), HSF with 20 clusters (``:171-173``), batch 1
(``:177-179``), lr 0.01 and betas (0.5, 0.999) (``:156``, ``trainer.py:87``), sigma 4
(``trainer.py:194``). The fixed inputs are :func:`dapo.crosscheck.inputs.synthetic_batch`, scored one
image at a time under one product name.

Compared: the image score and both columns of the image probabilities, every layer's upsampled
probabilities (training path), the test map before and after smoothing, the points HSF clusters
on every call, the two loss terms of every step, the gradients of the first step and the weights
after ``steps`` Adam steps. The release's k-means is replayed with our labels
(``release_adaclip.py``); its AdamW is run as Adam (ours, :func:`dapo.methods.adaclip.adaclip_recipe`).
``as_released_dice/`` rows give the release's per-row Dice (:data:`KNOWN_DIFFERENCES`).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import torch

import dapo.methods.adaclip as adaclip_module
from dapo.clip.backbone import Backbone
from dapo.crosscheck import ours
from dapo.crosscheck.anomalyclip_check import write_weights
from dapo.crosscheck.compare import compare
from dapo.crosscheck.driver import CheckResult, check_release_path, release_commit, run_release_side
from dapo.crosscheck.inputs import synthetic_batch
from dapo.crosscheck.mapping import adaclip_to_release, release_to_adaclip
from dapo.engine.train import make_optimizer, training_step
from dapo.methods import training_for
from dapo.methods.scoring import stage_probabilities

PRODUCT = "widget"  # one word: the release replaces only "-" in names (adaclip.py:213), ours "-" and "_"
STEPS = 5
SIGMA = 4.0  # trainer.py:194
TOLERANCE = 1e-5
#: Probabilities come from a softmax of 100 x cosines (adaclip.py:513, 525): a cosine rounding
#: difference of 1e-7 moves a logit by 1e-5, so probabilities and losses get 1e-4. Gradients: 1e-4
#: (O(1)-O(10) values, sums over 65k pixels). Weights after Adam steps at lr 0.01: Adam divides
#: the gradient by its own running size, so an entry whose gradient is rounding noise can move by
#: up to lr per step on one side and not the other; 5e-3 (half a step) bounds what rounding can do.
TOLERANCES = {"score/": 1e-4, "map/": 1e-4, "loss/": 1e-4, "as_released_dice/loss/": 1e-4, "grad/": 1e-4,
              "weights/": 5e-3,
              "hsf/": 1e-5, **{f"stage{i}/probs": 1e-4 for i in range(1, 9)}}
#: What the check finds where ours does not reproduce the release (docs/FIDELITY.md, AdaCLIP).
KNOWN_DIFFERENCES = {
    "as_released_dice/": "the release squeezes the batch-1 mask to (H, W) (method/trainer.py:115), so BinaryDiceLoss "
                         "(loss.py:95-106) averages the Dice losses of the H rows; ours is the Dice loss of the image",
}


def recording_kmeans(calls: list[tuple[torch.Tensor, torch.Tensor]]):
    """:func:`dapo.methods.adaclip.kmeans_labels` that keeps (points, labels) of every call."""
    original = adaclip_module.kmeans_labels

    def recorded(points, k, iterations, generator):
        labels = original(points, k, iterations, generator)
        calls.append((points.detach().to("cpu", torch.float32).clone(), labels.clone()))
        return labels

    return original, recorded


def our_side(backbone: Backbone, preset: str, parameters: dict, batch: dict, steps: int) -> tuple[dict, list]:
    """Our quantities, and the k-means labels in the order the release side clusters: per image
    the test forward and the training-path forward (ours computes both from one forward, so its
    labels are given twice), then one per training step."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original, recorded = recording_kmeans(calls)
    adaclip_module.kmeans_labels = recorded
    try:
        model = ours.build(preset, backbone, parameters)
        images, size = batch["images"], tuple(batch["images"].shape[-2:])
        side: dict = {}
        scores, probs, smoothed, unsmoothed, stages = [], [], [], [], []
        unsmoothed_config = replace(model.config, smoothing_sigma=0.0)
        model.eval()
        with torch.no_grad():
            for b in range(images.shape[0]):
                output = model(images[b:b + 1], (), products=[PRODUCT])
                prediction = model.predict(output, size, 1)
                scores.append(prediction.image_score)
                smoothed.append(prediction.anomaly_map)
                probs.append(output.global_logits.float().softmax(-1))
                config, model.config = model.config, unsmoothed_config
                unsmoothed.append(model.predict(output, size, 1).anomaly_map)
                model.config = config
                stages.append([stage_probabilities(logits, size, softmax_first=False, align_corners=True)
                               for logits in output.stage_logits])
        side["score/image"], side["score/probs"] = torch.cat(scores), torch.cat(probs)
        side["map/unsmoothed"], side["map/smoothed"] = torch.cat(unsmoothed), torch.cat(smoothed)
        for i in range(len(stages[0])):
            side[f"stage{i + 1}/probs"] = torch.cat([per_image[i] for per_image in stages])
        n_test = len(calls)
        params = model.learnable_parameters()
        optimizer = make_optimizer(list(params.values()), training_for(preset))
        model.train()
        for step in range(steps):
            b = step % images.shape[0]
            collated = {"image": images[b:b + 1], "label": batch["labels"][b:b + 1],
                        "type_mask": batch["masks"][b:b + 1, 0].long(), "product": [PRODUCT]}
            logged = training_step(model, optimizer, collated, (), precision="fp32")
            side[f"loss/step{step}/global"] = torch.tensor(logged["global"], dtype=torch.float64)
            side[f"loss/step{step}/local"] = torch.tensor(logged["local"], dtype=torch.float64)
            side[f"as_released_dice/loss/step{step}/local"] = side[f"loss/step{step}/local"]
            if step == 0:
                side.update({f"grad/{name}": p.grad.detach().clone() for name, p in params.items()})
        side.update({f"weights/{name}": p.detach().clone() for name, p in params.items()})
    finally:
        adaclip_module.kmeans_labels = original
    test, train = calls[:n_test], calls[n_test:]
    order = [call for call in test for _ in range(2)] + train
    for j, (points, _) in enumerate(order):
        side[f"hsf/points/call{j}"] = points[0]
    return side, [labels[0] for _, labels in order]


def split_release(raw: dict) -> dict:
    """The release side's output as comparable tensors (gradients and weights under our names)."""
    out = {}
    for key, value in raw.items():
        if key == "grad_release":
            out.update({f"grad/{k}": v for k, v in release_to_adaclip(value).items()})
        elif key == "weights_release":
            out.update({f"weights/{k}": v for k, v in release_to_adaclip(value).items()})
        elif key == "hsf/points":
            out.update({f"hsf/points/call{j}": p.float() for j, p in enumerate(value)})
        elif not key.startswith("fact/"):
            out[key] = value
    return out


def run(release_path: str | Path, preset: str = "adaclip", *, steps: int = STEPS,
        tolerance: float = TOLERANCE) -> CheckResult:
    """Run both sides on the compact backbone and compare every quantity."""
    from open_clip import get_model_config

    path = check_release_path("adaclip", release_path)
    backbone = ours.compact_backbone()
    model = ours.build(preset, backbone)
    config = model.config
    parameters = {n: p.detach().clone() for n, p in model.learnable_parameters().items()}
    batch = synthetic_batch(backbone.image_size)
    recipe = training_for(preset)
    side, labels = our_side(backbone, preset, parameters, batch, steps)
    with tempfile.TemporaryDirectory(prefix="crosscheck-adaclip-") as tmp:
        model_config = get_model_config(ours.COMPACT)
        spec = {
            "weights": str(write_weights(Path(tmp))), "model_config": model_config, "quick_gelu": False,
            "image_size": backbone.image_size, "features_list": list(backbone.tap_layers),
            "prompt_length": config.prompt_length, "prompt_depth": config.prompt_depth,
            "k_clusters": config.k_clusters, "context_length": int(model_config["text_cfg"]["context_length"]),
            "sigma": SIGMA, "steps": steps, "lr": recipe.lr, "betas": recipe.betas, "product": PRODUCT,
            "parameters": adaclip_to_release(parameters, config.prompt_length), "kmeans_labels": labels,
            "images": batch["images"], "labels": batch["labels"], "masks": batch["masks"],
        }
        raw = run_release_side("adaclip", path, spec)
        theirs = split_release(raw)
    rows = compare(side, theirs, tolerance, TOLERANCES)
    facts = {"fact/backbone": "compact, GELU, 128 px, taps " + ", ".join(map(str, backbone.tap_layers)),
             "fact/optimiser": "Adam on both sides (the release's AdamW, trainer.py:87, adds weight decay 0.01)",
             "fact/kmeans": "the release's k-means replays our labels (scikit-learn KMeans unseeded, adaclip.py:239)",
             **{key: value for key, value in raw.items() if key.startswith("fact/release_")}}
    return CheckResult("adaclip", preset, release_commit(path), rows, facts)
