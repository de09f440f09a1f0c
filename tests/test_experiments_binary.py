"""Evaluation helpers of notebooks 04 and 05 on a smoke-size synthetic world with the tiny backbone:
binary curves and the multi-label evaluation against scikit-learn on the same predictions,
seeds of training-free methods, and inference-only variants (MultiADS-F)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from dapo.experiments.runs import (
    add_inference_variants,
    evaluate_binary,
    evaluate_binary_curves,
    evaluate_methods,
    inference_variant,
    multilabel_evaluator,
    predict_products,
)
from dapo.methods import config_for, make_model


def test_binary_curves_are_the_evaluators_on_the_same_scores(tiny_dapo, smoke_target):
    evaluation = evaluate_binary_curves(tiny_dapo, smoke_target, device="cpu", progress=False)
    pd.testing.assert_frame_equal(evaluation.table, evaluate_binary(tiny_dapo, smoke_target, device="cpu", progress=False))
    scores, labels = [], []
    for _, _, batch, pred in predict_products(tiny_dapo, smoke_target, device="cpu", progress=False):
        scores.append(pred["image_score"].float().numpy())
        labels.append(np.asarray(batch["label"]))
    scores, labels = np.concatenate(scores).astype(np.float64), np.concatenate(labels).astype(bool)
    pooled = evaluation.roc[evaluation.roc["product"] == "pooled"]
    assert np.trapezoid(pooled["tpr"], pooled["fpr"]) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert set(evaluation.roc["product"]) == {*smoke_target.products, "pooled"}
    half = evaluation.rates[(evaluation.rates["product"] == "pooled") & (evaluation.rates["threshold"] == 0.5)].iloc[0]
    predicted = scores >= 0.5
    assert (half["tp"], half["fp"]) == ((predicted & labels).sum(), (predicted & ~labels).sum())
    assert half["tp"] + half["fn"] == labels.sum() and half["fp"] + half["tn"] == (~labels).sum()
    assert len(evaluation.rates) == 101 * (len(smoke_target.products) + 1)


def test_multilabel_evaluation_matches_sklearn_per_product(tiny_dapo, smoke_target):
    result = multilabel_evaluator(tiny_dapo, smoke_target, device="cpu", progress=False).compute(0.5)
    seen = {}
    for product, vocabulary, batch, pred in predict_products(tiny_dapo, smoke_target, device="cpu", progress=False):
        probs = pred["defect_probs"].float().numpy()
        truth = np.array([[name in defects for name in vocabulary] for defects in batch["defects"]])
        old = seen.get(product, (np.empty((0, len(vocabulary))), np.empty((0, len(vocabulary)), bool)))
        seen[product] = (np.vstack([old[0], probs]), np.vstack([old[1], truth]))
    assert list(result.per_product.index) == [*smoke_target.products, "mean"]
    for product, (probs, truth) in seen.items():
        assert truth.any(axis=1).any() and not truth.any(axis=1).all()  # defective and normal images
        reference = precision_recall_fscore_support(truth, probs > 0.5, average="macro", zero_division=0)[:3]
        np.testing.assert_allclose(result.per_product.loc[product, ["precision", "recall", "f1"]].to_numpy(float),
                                   reference, atol=1e-12)
        assert result.per_product.loc[product, "n_images"] == len(truth)


def test_training_free_methods_are_evaluated_once_per_dataset():
    calls = []

    def evaluate(model, dataset, **kwargs):
        calls.append((model, dataset, kwargs["desc"]))
        return len(calls)

    trained = {("A", 0): ("a0", pd.DataFrame()), ("A", 1): ("a1", pd.DataFrame()), ("Free", 0): ("f", None),
               ("Free", 1): ("f", None)}
    results = evaluate_methods(trained, {"x": "X", "y": "Y"}, evaluate, device="cpu")
    assert {name: {label: len(v) for label, v in by.items()} for name, by in results.items()} == \
           {"x": {"A": 2, "Free": 1}, "y": {"A": 2, "Free": 1}}
    assert ("a1", "Y", "A seed 1 on y") in calls and len(calls) == 6


def test_multiads_f_is_multiads_scored_differently(tiny_backbone):
    multiads = make_model("multiads", tiny_backbone, seed=2)
    variant = inference_variant(multiads, "multiads_f")
    assert variant.config == config_for("multiads_f", seed=2)
    assert multiads.config == config_for("multiads", seed=2)  # the trained tiny_dapo is unchanged
    assert all(a is b for a, b in zip(variant.parameters(), multiads.parameters()))
    with pytest.raises(ValueError, match="differ in trained settings .*'lam'"):
        inference_variant(make_model("dapo", tiny_backbone), "multiads")
    trained = {("MultiADS", s): (multiads, None) for s in (0, 1)} | {("CLIP-AC", 0): ("c", None)}
    with_variants = add_inference_variants(trained, {"MultiADS-F": ("MultiADS", "multiads_f")})
    assert list(with_variants) == [("MultiADS", 0), ("MultiADS", 1), ("MultiADS-F", 0), ("MultiADS-F", 1),
                                   ("CLIP-AC", 0)]
    assert with_variants["MultiADS-F", 1][0].config.inference_vocabulary == "product"
    with pytest.raises(ValueError, match="needs 'DAPO', which was not trained"):
        add_inference_variants(trained, {"X": ("DAPO", "dapo_naive")})


def test_inference_variant_is_scored_as_the_preset(tiny_backbone, images):
    from dapo.engine.inference import Predictor

    multiads = make_model("multiads", tiny_backbone)
    variant = inference_variant(multiads, "multiads_f")
    with torch.no_grad():
        a = Predictor(multiads, ("hole", "scratch"), product="widget", precision="fp32")(images)
        predictor = Predictor(variant, ("hole", "scratch"), product="widget", precision="fp32")
        b = predictor(images)
        states = variant(images, text_embeddings=predictor.text_embeddings).state_logits.softmax(-1)
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map)  # the same trained tiny_dapo: the same maps
    torch.testing.assert_close(a.image_score, a.anomaly_map.flatten(1).topk(3).values.mean(1))  # MultiADS test.py
    torch.testing.assert_close(b.image_score, 0.5 * (1 - states[:, 0]) + 0.5 * b.anomaly_map.flatten(1).amax(1))
