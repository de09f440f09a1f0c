"""Release side of the AdaCLIP cross-check: run in its own process, never imported into ``dapo``.

``python release_adaclip.py INPUT OUTPUT`` with ``PYTHONPATH=<AdaCLIP checkout>:<stub dir>``.
Our own code: it imports the release's classes by name (``method.clip_model.CLIP``,
``method.adaclip.AdaCLIP``, ``loss.FocalLoss``, ``loss.BinaryDiceLoss``) and composes them as
``method/trainer.py:103-141`` (one training step) and ``:188-194`` (the test path) do; the
trainer itself is not built because it downloads the OpenAI weights (``trainer.py:38-39``).
``method/__init__.py`` is skipped (it imports the trainer, hence cv2 and the download): the
``method`` package is registered with its folder as path and its modules imported by name.

Four things are set on this side so that the two sides compute the same numbers, each cited:
``Tensor.half`` is the identity (``adaclip.py:87, 118, 123`` cast the prompts to half, a GPU
habit; ours keep the compute dtype), ``Tensor.norm`` works on a copy (``adaclip.py:223, 225, 482,
486`` divide a tensor in place by its own norm, which autograd refuses in fp32: under the CUDA
autocast the release runs in (``adaclip.py:567``) ``norm`` casts its half input to a float32 copy
first, and the copy is what is saved; on the CPU there is no autocast), the tokenizer's 77 positions are cut to the compact text
tower's context (``adaclip.py:219``; only padding is cut) and the k-means of HSF returns the
labels our side's k-means gave on the same call (``adaclip.py:239, 263``: scikit-learn's
``KMeans`` without a seed; ours is seeded): the points it is given are saved and compared.
The Dice terms are computed both per image (ours, the paper's) and as released: ``trainer.py:115``
squeezes the batch-1 mask to (H, W), so ``BinaryDiceLoss`` (``loss.py:95-106``) takes the H rows
as its batch and averages H per-row Dice losses.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # our folder must not shadow the release's modules (loss, ...)

import types  # noqa: E402

import torch  # noqa: E402

_HALF = torch.Tensor.half
#: trainer.py:69-76: the parameters the release's optimiser updates (matched as substrings, :79-84)
LEARNABLE = ("text_prompter", "visual_prompter", "patch_token_layer", "cls_token_layer",
             "dynamic_visual_prompt_generator", "dynamic_text_prompt_generator")


def shim_pkg_resources() -> None:
    """``adaclip.py:4`` imports ``packaging`` from ``pkg_resources`` (gone from recent setuptools)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)


def register_method_package() -> None:
    """The release's ``method`` package without running its ``__init__`` (which imports the trainer)."""
    for root in sys.path:
        folder = os.path.join(root or ".", "method")
        if os.path.isfile(os.path.join(folder, "adaclip.py")):
            package = types.ModuleType("method")
            package.__path__ = [folder]
            sys.modules["method"] = package
            return
    raise SystemExit("no method/adaclip.py on PYTHONPATH: pass the AdaCLIP checkout")


class ReplayKMeans:
    """Stands in for ``HybridSemanticFusion.cluster_performer``: returns the given labels call by
    call and keeps the points it was asked to cluster."""

    def __init__(self, labels: list[torch.Tensor]) -> None:
        self.labels = list(labels)
        self.points: list[torch.Tensor] = []

    def fit_predict(self, points):
        if not self.labels:
            raise RuntimeError("the release clustered more often than our side did")
        self.points.append(torch.as_tensor(points).clone())
        return self.labels.pop(0).numpy()


def build(spec: dict):
    """The release's CLIP on the spec's weights and its AdaCLIP with our learned tensors."""
    from method.adaclip import AdaCLIP
    from method.clip_model import CLIP

    cfg = spec["model_config"]
    clip = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=spec["quick_gelu"])
    state = torch.load(spec["weights"], map_location="cpu")
    missing, unexpected = clip.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"the compact weights do not fit the release's CLIP: missing {missing}, unexpected {unexpected}")
    clip = clip.float().eval()
    model = AdaCLIP(freeze_clip=clip, text_channel=cfg["embed_dim"], visual_channel=cfg["vision_cfg"]["width"],
                    prompting_length=spec["prompt_length"], prompting_depth=spec["prompt_depth"],
                    prompting_branch="VL", prompting_type="SD", use_hsf=True, k_clusters=spec["k_clusters"],
                    output_layers=spec["features_list"], device="cpu", image_size=spec["image_size"]).float()
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in spec["parameters"].items():
            own[name].copy_(value.reshape(own[name].shape))
    layer = model.text_embedding_layer
    tokenize, length = layer.tokenize, spec["context_length"]

    def cut(texts, context_length=77, truncate=False):
        ids = tokenize(texts, context_length, truncate)
        if bool((ids[:, length:] != 0).any()):
            raise SystemExit(f"a prompt is longer than the compact text tower's {length} positions")
        return ids[:, :length]

    layer.tokenize = cut
    return model


def main(source: str, target: str) -> None:
    shim_pkg_resources()
    register_method_package()
    from loss import BinaryDiceLoss, FocalLoss
    from scipy.ndimage import gaussian_filter

    torch.Tensor.half = lambda self, *args, **kwargs: self
    norm = torch.Tensor.norm
    torch.Tensor.norm = lambda self, *args, **kwargs: norm(self.clone(), *args, **kwargs)
    spec = torch.load(source, weights_only=False)
    model = build(spec)
    replay = ReplayKMeans(spec["kmeans_labels"])
    model.HSF.cluster_performer = replay
    images, labels, masks, product = spec["images"], spec["labels"], spec["masks"], spec["product"]
    n = images.shape[0]
    out: dict = {"fact/context_length": spec["context_length"]}
    model.eval()
    scores, maps, probs, stage = [], [], [], [[] for _ in spec["features_list"]]
    with torch.no_grad():
        for b in range(n):  # batch 1 (train.py:177-179); the test path, trainer.py:188
            anomaly_map, score = model(images[b:b + 1], [product], aggregation=True)
            scores.append(score)
            maps.append(anomaly_map)
            layer_maps, layer_probs = model(images[b:b + 1], [product], aggregation=False)
            probs.append(layer_probs)
            for i, m in enumerate(layer_maps):
                stage[i].append(m)
    out["score/image"] = torch.cat(scores)
    out["fact/release_image_scores"] = ", ".join(f"{float(v):.3g}" for v in out["score/image"])
    out["score/probs"] = torch.cat(probs)
    out["map/unsmoothed"] = torch.cat(maps)
    out["map/smoothed"] = torch.stack([torch.from_numpy(gaussian_filter(m.numpy(), sigma=spec["sigma"]))
                                       for m in out["map/unsmoothed"]])  # trainer.py:194
    for i, parts in enumerate(stage):
        out[f"stage{i + 1}/probs"] = torch.cat(parts)
    model.train()  # trainer.py:144
    params = {name: p for name, p in model.named_parameters() if any(key in name for key in LEARNABLE)}
    optimizer = torch.optim.Adam(params.values(), lr=spec["lr"], betas=spec["betas"])  # ours; trainer.py:87: AdamW
    focal, dice = FocalLoss(), BinaryDiceLoss()  # trainer.py:34-35
    for step in range(spec["steps"]):
        b = step % n
        layer_maps, score = model(images[b:b + 1], [product], aggregation=False)  # trainer.py:108
        gt = masks[b:b + 1]  # (1, 1, S, S), already 0/1 (trainer.py:117-118)
        rows = gt.squeeze()  # trainer.py:115: (S, S) for batch 1
        classification = focal(score, labels[b:b + 1].unsqueeze(1).float())  # trainer.py:126
        per_image = sum(focal(m, gt) + dice(m[:, 1], gt[:, 0]) + dice(m[:, 0], 1 - gt[:, 0]) for m in layer_maps)
        per_row = sum(focal(m, rows) + dice(m[:, 1], rows) + dice(m[:, 0], 1 - rows) for m in layer_maps)  # :131-133
        out[f"loss/step{step}/global"] = classification.detach().double()
        out[f"loss/step{step}/local"] = per_image.detach().double()
        out[f"as_released_dice/loss/step{step}/local"] = per_row.detach().double()
        optimizer.zero_grad()
        (classification + per_image).backward()
        if step == 0:
            # text_prompter.static_prompts.0 gets no gradient: the text prompts are written from the
            # second layer on (adaclip.py:81-88); ours has a zero gradient there
            out["grad_release"] = {name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                                   for name, p in params.items()}
        optimizer.step()
    out["fact/release_global_loss_per_step"] = ", ".join(
        f"{float(out[f'loss/step{step}/global']):.4g}" for step in range(spec["steps"]))
    out["weights_release"] = {name: p.detach().clone() for name, p in params.items()}
    out["hsf/points"] = replay.points
    torch.save(out, target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
