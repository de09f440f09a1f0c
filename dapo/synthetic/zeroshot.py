"""Zero-shot evaluation of the compact CLIP on held-out generated images.

Three measurements (all on images of the ``heldout`` stream, which pretraining never sees):

* defect-type classification: each image has one defect type or none; the classes are
  normal plus every defect type the generator can draw on its product (12 or 13), scored by
  cosine similarity with the mean embedding of caption-template prompts;
* product recognition: all products, prompts that name only the product;
* calibration (:func:`patch_separability`): how well defective patches separate from normal
  ones *without training*, with CLIP-AC-style prompts on the last layer's projected patch
  tokens, against a linear probe fitted on the frozen tokens of other images (the signal a
  trained adapter can reach).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open_clip
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dapo.synthetic.captions import class_prompts, product_prompts
from dapo.synthetic.corpus import HELDOUT_STREAM, state_index, to_tensor
from dapo.synthetic.generator import STYLES, SyntheticImage, applicable_defects, generate_image, make_rng
from dapo.synthetic.products import PRODUCTS
from dapo.util.progress import tqdm

CLIP_AC_NORMAL = ("a photo of a normal {}.", "a photo of a flawless {}.")
CLIP_AC_ABNORMAL = ("a photo of an anomalous {}.", "a photo of a damaged {}.")


@dataclass(frozen=True)
class HeldOutItem:
    image: SyntheticImage
    label: str  # "normal" or the defect superclass


def heldout_set(seed: int = 0, per_class: int = 4, image_size: int = 128,
                severity: tuple[float, float] = (0.25, 1.0)) -> list[HeldOutItem]:
    """``per_class`` images of every (product, state) pair, states = normal + applicable defects."""
    items = []
    styles = tuple(STYLES)
    for product in PRODUCTS:
        for label in ("normal", *applicable_defects(product)):
            for k in range(per_class):
                rng = make_rng(seed, HELDOUT_STREAM, product, label, k)
                defects = () if label == "normal" else (label,)
                image = generate_image(product, defects, rng, size=image_size, style=styles[k % len(styles)],
                                       severity=severity)
                items.append(HeldOutItem(image, label))
    return items


@torch.no_grad()
def encode_texts(model, texts: list[str], tokenizer) -> torch.Tensor:
    return F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)


def prompt_embedding(model, prompts: list[str], tokenizer) -> torch.Tensor:
    """Mean of the normalised prompt embeddings, renormalised."""
    return F.normalize(encode_texts(model, prompts, tokenizer).mean(0), dim=-1)


@torch.no_grad()
def encode_images(model, images: list[np.ndarray], batch_size: int = 64, normalize: bool = True) -> torch.Tensor:
    """Image embeddings, in batches (normalised unless ``normalize=False``)."""
    chunks = [model.encode_image(torch.stack([to_tensor(im) for im in images[i:i + batch_size]])).float()
              for i in range(0, len(images), batch_size)]
    features = torch.cat(chunks)
    return F.normalize(features, dim=-1) if normalize else features


def _tokenizer(model_name: str):
    return open_clip.get_tokenizer(model_name)


@torch.no_grad()
def defect_type_accuracy(model, items: list[HeldOutItem], model_name: str = "dapo-compact") -> dict:
    """Top-1 accuracy of zero-shot defect-type classification, overall and per class."""
    tokenizer = _tokenizer(model_name)
    features = encode_images(model, [it.image.image for it in items])
    predictions = []
    for product in PRODUCTS:
        labels = ("normal", *applicable_defects(product))
        classes = torch.stack([prompt_embedding(model, class_prompts(product, None if c == "normal" else c), tokenizer)
                               for c in labels])
        for index, item in enumerate(items):
            if item.image.product == product:
                predictions.append((item.label, labels[int((features[index] @ classes.t()).argmax())]))
    frame = pd.DataFrame(predictions, columns=["true", "predicted"])
    per_class = frame.assign(correct=frame.true == frame.predicted).groupby("true").correct.mean()
    n_classes = sorted({1 + len(applicable_defects(p)) for p in {it.image.product for it in items}})
    return {"accuracy": float((frame.true == frame.predicted).mean()), "per_class": per_class.to_dict(),
            "n_classes_per_product": n_classes, "n_images": len(frame),
            "confusion": pd.crosstab(frame.true, frame.predicted)}


@torch.no_grad()
def product_accuracy(model, items: list[HeldOutItem], model_name: str = "dapo-compact") -> dict:
    """Top-1 accuracy of zero-shot product recognition among all products."""
    tokenizer = _tokenizer(model_name)
    names = list(PRODUCTS)
    classes = torch.stack([prompt_embedding(model, product_prompts(p), tokenizer) for p in names])
    predicted = (encode_images(model, [it.image.image for it in items]) @ classes.t()).argmax(1)
    truth = torch.tensor([names.index(it.image.product) for it in items])
    per_product = {p: float((predicted[truth == i] == i).float().mean()) for i, p in enumerate(names)}
    return {"accuracy": float((predicted == truth).float().mean()), "per_product": per_product,
            "n_classes": len(names), "n_images": len(items)}


@torch.no_grad()
def _patch_tokens(model, images: list[np.ndarray], layer: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch tokens of one layer (``None``: last, after ln_post and projection) and the global embeddings."""
    visual = model.visual
    batch = torch.stack([to_tensor(im) for im in images])
    x = visual.conv1(batch).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = visual.ln_pre(torch.cat([cls, x], 1) + visual.positional_embedding)
    taps = []
    for block in visual.transformer.resblocks:
        x = block(x)
        taps.append(x)
    last = visual.ln_post(x)
    global_embedding = F.normalize(last[:, 0] @ visual.proj, dim=-1)
    if layer is None:
        return F.normalize(last[:, 1:] @ visual.proj, dim=-1), global_embedding
    return taps[layer - 1][:, 1:], global_embedding


def _patch_labels(items: list[HeldOutItem], grid: int) -> np.ndarray:
    """Per patch: 1 when at least half of it is defective."""
    labels = []
    for item in items:
        mask = np.zeros(item.image.image.shape[:2], np.float32)
        for m in item.image.masks.values():
            mask = np.maximum(mask, m)
        size = mask.shape[0] // grid
        labels.append(mask.reshape(grid, size, grid, size).mean(axis=(1, 3)).reshape(-1) >= 0.5)
    return np.stack(labels).astype(np.int64)


@torch.no_grad()
def patch_separability(model, fit_items: list[HeldOutItem], test_items: list[HeldOutItem], *, probe_layer: int,
                       model_name: str = "dapo-compact") -> dict:
    """Zero-shot (CLIP-AC-style) vs linear-probe separability of defective patches and images.

    Returns patch-level AUROC of the CLIP-AC score (softmax over the two prompt ensembles on
    the projected last-layer patch tokens), image-level AUROC of the same prompts on the
    global embedding, and patch-level AUROC of a logistic-regression probe fitted on
    ``fit_items`` (layer ``probe_layer`` tokens) and scored on ``test_items``.
    """
    tokenizer = _tokenizer(model_name)
    grid = model.visual.grid_size[0]
    scale = model.logit_scale.exp()
    scores, image_scores = [], []
    for item in test_items:
        product = item.image.product.replace("_", " ")
        text = torch.stack([prompt_embedding(model, [t.format(product) for t in CLIP_AC_NORMAL], tokenizer),
                            prompt_embedding(model, [t.format(product) for t in CLIP_AC_ABNORMAL], tokenizer)])
        patches, global_embedding = _patch_tokens(model, [item.image.image], None)
        scores.append(torch.softmax(scale * patches[0] @ text.t(), -1)[:, 1].numpy())
        image_scores.append(float(torch.softmax(scale * global_embedding[0] @ text.t(), -1)[1]))
    image_labels = [int(bool(item.image.defects)) for item in test_items]
    test_labels = _patch_labels(test_items, grid)
    probe = LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced")
    fit_tokens = torch.cat([_patch_tokens(model, [it.image.image for it in fit_items[i:i + 64]], probe_layer)[0]
                            for i in tqdm(range(0, len(fit_items), 64), desc="probe features", leave=False)])
    probe.fit(fit_tokens.reshape(-1, fit_tokens.shape[-1]).numpy(), _patch_labels(fit_items, grid).reshape(-1))
    test_tokens = torch.cat([_patch_tokens(model, [it.image.image for it in test_items[i:i + 64]], probe_layer)[0]
                             for i in range(0, len(test_items), 64)])
    probe_scores = probe.decision_function(test_tokens.reshape(-1, test_tokens.shape[-1]).numpy())
    return {
        "clip_ac_patch_auroc": float(roc_auc_score(test_labels.reshape(-1), np.concatenate(scores))),
        "clip_ac_image_auroc": float(roc_auc_score(image_labels, image_scores)),
        "probe_patch_auroc": float(roc_auc_score(test_labels.reshape(-1), probe_scores)),
        "defective_patch_share": float(test_labels.mean()),
    }


@torch.no_grad()
def head_accuracy(model, heads, items: list[HeldOutItem]) -> dict:
    """Top-1 accuracy of the image-tower stage's supervised heads (a training monitor, not a
    zero-shot measurement): product among all products, state among the states of the
    image's product."""
    embeddings = encode_images(model, [it.image.image for it in items], normalize=False)
    product_logits, state_logits = heads["product"](embeddings), heads["state"](embeddings)
    names = list(PRODUCTS)
    products = [names[int(i)] == it.image.product for i, it in zip(product_logits.argmax(1), items)]
    states = []
    for logits, item in zip(state_logits, items):
        labels = ("normal", *applicable_defects(item.image.product))
        columns = [state_index(s) for s in labels]
        states.append(labels[int(logits[columns].argmax())] == item.label)
    return {"product_top1": float(np.mean(products)), "defect_type_top1": float(np.mean(states))}
