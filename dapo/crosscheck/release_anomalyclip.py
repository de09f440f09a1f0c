"""Release side of the AnomalyCLIP cross-check: run in its own process, never imported into ``dapo``.

``python release_anomalyclip.py INPUT OUTPUT`` with ``PYTHONPATH=<AnomalyCLIP checkout>:<stub dir>``.
Our own code: it imports the release's pieces by name (``AnomalyCLIP_lib.build_model``,
``AnomalyCLIP_lib.compute_similarity``, ``AnomalyCLIP_lib.get_similarity_map``,
``prompt_ensemble.AnomalyCLIP_PromptLearner``, ``loss.FocalLoss`` and ``loss.BinaryDiceLoss``)
and composes them as ``train.py:30-106`` and ``test.py:89-111`` do (``train(args)`` is one
function over a dataset that calls ``.cuda()``, so its few lines of glue are followed here, each
cited). The whole pipeline runs once per *variant*: ``ln_post`` and ``half`` say whether the
global embedding goes through ``ln_post`` (ours; the release projects without it,
``AnomalyCLIP.py:387``) and whether the deep text tokens keep the release's ``.half()``
(``AnomalyCLIP.py:246``); the two are switched by a forward hook and by making ``Tensor.half``
the identity in this process, so each difference can be measured alone (and both together:
the release as it is).
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # our folder must not shadow the release's modules (loss, ...)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

_HALF = torch.Tensor.half


def shim_pkg_resources() -> None:
    """``model_load.py:6`` and ``prompt_ensemble.py:3`` import ``packaging`` from ``pkg_resources``
    (gone from recent setuptools): where it is missing, a module holding ``packaging`` stands in."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import types

        import packaging.version

        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)


def set_half(enabled: bool) -> None:
    """The release's ``.half()`` (``AnomalyCLIP.py:246``) as released, or the identity."""
    torch.Tensor.half = _HALF if enabled else (lambda self, *args, **kwargs: self)


def build(spec: dict):
    """The release's model and prompt learner on the spec's weights, the learned tensors set."""
    from AnomalyCLIP_lib.build_model import build_model
    from prompt_ensemble import AnomalyCLIP_PromptLearner

    details = {"Prompt_length": spec["n_ctx"], "learnabel_text_embedding_depth": spec["text_depth"],
               "learnabel_text_embedding_length": spec["deep_tokens"]}  # train.py:30
    state = torch.load(spec["weights"], map_location="cpu")
    model = build_model("compact", state, details).float().eval()  # model_load.py:164-166 (CPU: float)
    learner = AnomalyCLIP_PromptLearner(model, details)  # train.py:39
    # the learner tokenises at 77 tokens (prompt_ensemble.py:15); the text tower has context_length
    # positions (build_model.py:24): cut the buffers after the end-of-text token (padding only)
    length = spec["context_length"]
    for name in ("token_suffix_pos", "token_suffix_neg"):
        buffer = getattr(learner, name)
        setattr(learner, name, buffer[:, :, : length - 1 - learner.n_ctx].clone())
    for name in ("tokenized_prompts_pos", "tokenized_prompts_neg"):
        setattr(learner, name, getattr(learner, name)[..., :length].clone())
    with torch.no_grad():
        own = dict(learner.named_parameters())
        for name, value in spec["parameters"].items():
            own[name].copy_(value.reshape(own[name].shape))
    model.visual.DAPM_replace(DPAM_layer=spec["dpam_layer"])  # train.py:42 (20 there)
    return model, learner


def add_ln_post(model) -> None:
    """Hook: the global embedding through ``ln_post`` before the projection (ours), not as at ``:387``."""
    kept = {}

    def keep(module, inputs, output):
        kept["x_ori"] = output[0][1]

    def replace(module, inputs, output):
        return module.ln_post(kept["x_ori"][0, :, :]) @ module.proj, output[1]

    model.visual.transformer.register_forward_hook(keep)
    model.visual.register_forward_hook(replace)


def pipeline(spec: dict, *, ln_post: bool, half: bool) -> dict:
    import AnomalyCLIP_lib
    from loss import BinaryDiceLoss, FocalLoss

    set_half(half)
    torch.manual_seed(0)
    model, learner = build(spec)
    if ln_post:
        add_ln_post(model)
    images, size, taps, dpam = spec["images"], spec["image_size"], spec["features_list"], spec["dpam_layer"]
    out: dict = {}

    def text_features():  # train.py:78-81
        prompts, tokenized, deep = learner(cls_id=None)
        features = model.encode_text_learn(prompts, tokenized, deep).float()
        features = torch.stack(torch.chunk(features, dim=0, chunks=2), dim=1)
        return features / features.norm(dim=-1, keepdim=True), tokenized

    def stage_maps(patch_features, text):  # train.py:88-94 / test.py:97-101
        logits, maps = [], []
        for patch in patch_features:
            patch = patch / patch.norm(dim=-1, keepdim=True)
            similarity, _ = AnomalyCLIP_lib.compute_similarity(patch, text[0])
            maps.append(AnomalyCLIP_lib.get_similarity_map(similarity[:, 1:, :], size).permute(0, 3, 1, 2))
            # the logits compute_similarity takes its softmax of (model_load.py:233-235)
            raw = (patch[:, 1:] @ text[0].t()) / 0.07
            side = int(raw.shape[1] ** 0.5)
            logits.append(raw.permute(0, 2, 1).reshape(raw.shape[0], -1, side, side))
        return logits, maps

    with torch.no_grad():  # test.py:89-111
        text, tokenized = text_features()
        out["tokens/forward"] = tokenized
        out["text/state_embeddings"] = text[0]
        image_features, patch_features = model.encode_image(images, taps, DPAM_layer=dpam)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        out["image/embedding"] = image_features
        for i, patch in enumerate(patch_features):
            out[f"patch/tap{i + 1}"] = F.normalize(patch[:, 1:], dim=-1)
        # train.py:82-83: (B, 1, C) @ (1, C, 2) -> the global logits (B, 2)
        out["train/global_logits"] = (image_features.unsqueeze(1) @ text.permute(0, 2, 1))[:, 0] / 0.07
        # test.py:93-95 scores one image per batch (its loader: batch_size=1, test.py:48); per image here
        out["score/image"] = torch.cat([((f[None] @ text.permute(0, 2, 1)) / 0.07).softmax(-1)[:, 0, 1]
                                        for f in image_features])
        logits, maps = stage_maps(patch_features, text)
        for i, (logit, prob) in enumerate(zip(logits, maps)):
            out[f"stage{i + 1}/logits"] = logit
            out[f"stage{i + 1}/probs"] = prob
        summed = torch.stack([(m[:, 1] + 1 - m[:, 0]) / 2.0 for m in maps]).sum(dim=0)
        out["map/sum_over_stages_unsmoothed"] = summed
        from scipy.ndimage import gaussian_filter

        out["map/anomaly_sum_over_stages"] = torch.stack(
            [torch.from_numpy(gaussian_filter(m.numpy(), sigma=spec["sigma"])) for m in summed])  # test.py:111

    # training: train.py:44 (Adam on the prompt learner), :62-106
    optimizer = torch.optim.Adam(list(learner.parameters()), lr=spec["lr"], betas=(0.5, 0.999))
    loss_focal, loss_dice = FocalLoss(), BinaryDiceLoss()
    gt = spec["masks"].squeeze(1).clone()
    gt[gt > 0.5], gt[gt <= 0.5] = 1, 0
    label = spec["labels"]
    for step in range(spec["steps"]):
        with torch.no_grad():
            image_features, patch_features = model.encode_image(images, taps, DPAM_layer=dpam)
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text, _ = text_features()
        text_probs = (image_features.unsqueeze(1) @ text.permute(0, 2, 1))[:, 0, ...] / 0.07
        image_loss = F.cross_entropy(text_probs.squeeze(), label.long())
        _, maps = stage_maps(patch_features, text)
        loss = 0
        for i, m in enumerate(maps):
            focal, dice_abnormal, dice_normal = loss_focal(m, gt), loss_dice(m[:, 1], gt), loss_dice(m[:, 0], 1 - gt)
            if step == 0:
                out[f"loss/step0/stage{i + 1}/focal"] = focal.detach()
                out[f"loss/step0/stage{i + 1}/dice_normal"] = dice_normal.detach()
                out[f"loss/step0/stage{i + 1}/dice_abnormal"] = dice_abnormal.detach()
            loss = loss + focal + dice_abnormal + dice_normal
        loss = 4 * loss  # train.py:50,102 (lam = 4)
        optimizer.zero_grad()
        (loss + image_loss).backward()
        optimizer.step()
        out[f"loss/step{step}/ce"] = image_loss.detach().double()
        out[f"loss/step{step}/local_weighted"] = loss.detach().double()
        out[f"loss/step{step}/total"] = (loss + image_loss).detach().double()
        if step == 0:
            out["grad_release"] = {n: p.grad.detach().clone() for n, p in learner.named_parameters()
                                   if p.grad is not None}
    out["weights_release"] = {n: p.detach().clone() for n, p in learner.named_parameters()
                              if n in spec["parameters"]}
    set_half(True)
    return out


#: the variants run: prefix of their rows -> (ln_post, half)
VARIANTS = {"": (True, False), "as_released_half/": (True, True), "as_released_ln_post/": (False, False),
            "as_released/": (False, True)}


def main(inp: str, outp: str) -> None:
    spec = torch.load(inp, weights_only=False)
    shim_pkg_resources()
    out: dict = {}
    for prefix, (ln_post, half) in VARIANTS.items():
        for key, value in pipeline(spec, ln_post=ln_post, half=half).items():
            if key in ("grad_release", "weights_release"):
                out[f"{key}{'/' + prefix if prefix else ''}"] = value
            else:
                out[f"{prefix}{key}"] = value
    torch.save(out, outp)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python release_anomalyclip.py INPUT.pt OUTPUT.pt")
    main(sys.argv[1], sys.argv[2])
