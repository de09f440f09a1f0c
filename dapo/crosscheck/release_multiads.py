"""Release side of the MultiADS cross-check: run in its own process, never imported into ``dapo``.

``python release_multiads.py INPUT OUTPUT`` with ``PYTHONPATH=<MultiADS checkout>:<stub dir>``.
Our own code: it imports the release's pieces by name (its ``open_clip``,
``prompts.prompt_ensemble_mvtec_20cls.encode_text_with_prompt_ensemble``, ``model.LinearLayer``,
``loss.FocalLoss`` and ``loss.BinaryDiceLoss``) and composes them exactly as the release's
``train.py:171-209`` and ``test.py:314-341`` do: those two are monolithic functions over
datasets (and ``train.py:201`` reads an undefined ``img_mask``), so their few lines of glue are
followed here, each cited. ``img_mask`` is taken as the per-pixel defect id and ``img_mask_b``
as the binary mask, what the names and the loss classes expect.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # our folder must not shadow the release's modules (model, loss, ...)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main(inp: str, outp: str) -> None:
    spec = torch.load(inp, weights_only=False)
    torch.manual_seed(0)
    import open_clip
    from loss import BinaryDiceLoss, FocalLoss
    from model import LinearLayer
    from prompts.prompt_ensemble_mvtec_20cls import encode_text_with_prompt_ensemble

    open_clip.add_model_config(spec["model_config"])
    size = spec["image_size"]
    model, _, _ = open_clip.create_model_and_transforms(spec["model_name"], size, pretrained=spec["weights"])
    model = model.float().eval()
    length = spec["context_length"]
    tokenized = {}

    def tokenizer(texts):  # the release's tokenizer at the text tower's length (its default is 77)
        ids = open_clip.tokenize(texts, context_length=length)
        tokenized.setdefault(len(tokenized), ids)
        return ids

    out: dict = {"meta/release_open_clip": open_clip.__file__}
    with torch.no_grad():
        text_prompts = {}
        for product in spec["products"]:
            tokenized.clear()
            text_prompts.update(encode_text_with_prompt_ensemble(model, [product], tokenizer, "cpu"))
            ids = torch.cat(list(tokenized.values()))
            out[f"tokens/{product}"] = sorted_rows(ids)  # order-free: one row per sentence
            out[f"text/{product}"] = text_prompts[product].t()  # (C, K+1) -> (K+1, C)
    images, products = spec["images"], spec["batch_products"]
    features = list(spec["features_list"])
    layer = LinearLayer(spec["vision_width"], spec["embed_dim"], len(features), spec["model_name_for_layer"])
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(spec["parameters"][name])
    text = torch.stack([text_prompts[p] for p in products])  # train.py:176-180

    def stage_logits(patch_tokens):
        """train.py:185-193 / test.py:330-338: normalised adapted tokens @ text x 100, to (B, C, H, H)."""
        maps = []
        for tokens in patch_tokens:
            tokens = tokens / tokens.norm(dim=-1, keepdim=True)
            logits = (tokens @ text) / 0.01
            b, n, c = logits.shape
            h = int(n ** 0.5)
            maps.append(logits.permute(0, 2, 1).reshape(b, c, h, h))
        return maps

    with torch.no_grad():  # test.py:314-341
        image_features, patch_tokens = model.encode_image(images, features)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        out["image/embedding"] = image_features
        text_probs = torch.stack([((image_features[i] @ text[i]) * 100.0).softmax(dim=-1) for i in range(len(products))])
        out["score/global_states"] = text_probs[:, 1:].sum(dim=-1)  # test.py:324-325
        adapted = layer([t.clone() for t in patch_tokens])
        for i, tokens in enumerate(adapted):
            out[f"patch/tap{i + 1}"] = F.normalize(tokens, dim=-1)
        maps = []
        for i, logits in enumerate(stage_logits(adapted)):
            out[f"stage{i + 1}/logits"] = logits
            probs = torch.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=True), dim=1)
            out[f"stage{i + 1}/probs"] = probs
            maps.append(probs[:, 1:].sum(dim=1))
        summed = torch.stack(maps).sum(dim=0)  # test.py:339-341
        out["map/anomaly_sum_over_stages"] = summed
        out["score/top3_of_summed_map"] = summed.flatten(1).topk(3, dim=1).values.mean(dim=1)  # test.py:122

    # training: train.py:131 (Adam on the linear layers only) and :182-209
    optimizer = torch.optim.Adam(list(layer.parameters()), lr=spec["lr"], betas=(0.5, 0.999))
    loss_focal, loss_dice = FocalLoss(), BinaryDiceLoss()
    img_mask_b = spec["masks"]
    img_mask = (spec["masks"] * spec["type_ids"].view(-1, 1, 1, 1)).long()
    for step in range(spec["steps"]):
        with torch.no_grad():
            _, patch_tokens = model.encode_image(images, features)
        adapted = layer(list(patch_tokens))
        anomaly_maps = [torch.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=True), dim=1)
                        for logits in stage_logits(adapted)]
        loss = 0.0
        for num in range(len(anomaly_maps)):
            focal = loss_focal(anomaly_maps[num], img_mask)
            dice = loss_dice(torch.sum(anomaly_maps[num][:, 1:, :, :], dim=1), img_mask_b)
            if step == 0:
                out[f"loss/step0/stage{num + 1}/focal"] = focal.detach()
                out[f"loss/step0/stage{num + 1}/dice_abnormal"] = dice.detach()
            loss = loss + (focal + dice) / 2.0
        loss = loss / len(anomaly_maps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out[f"loss/step{step}/total"] = loss.detach().double()
        if step == 0:
            out["grad_release"] = {n: p.grad.detach().clone() for n, p in layer.named_parameters()}
    out["weights_release"] = {n: p.detach().clone() for n, p in layer.named_parameters()}
    torch.save(out, outp)


def sorted_rows(ids: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order (the same rule as ``dapo.crosscheck.compare.sorted_rows``)."""
    order = torch.arange(ids.shape[0])
    for column in range(ids.shape[1] - 1, -1, -1):
        order = order[torch.argsort(ids[order, column], stable=True)]
    return ids[order]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python release_multiads.py INPUT.pt OUTPUT.pt")
    main(sys.argv[1], sys.argv[2])
