"""Diagnose AdaCLIP's image head on the synthetic worlds (docs/FIDELITY.md, "AdaCLIP").

Trains ``adaclip`` with its release recipe (batch 1, lr 0.01, Adam betas (0.5, 0.999)) for
``--steps`` single-image steps on the training world, logging per step the image label, the
global (image) loss and the two image logits; then scores the test images of the worlds and
reports the image AUROC and how many image probabilities are saturated (below 1e-3 or above
1 - 1e-3). Before training it prints the cosine of the normal and abnormal text embeddings and
the initial logit gaps. Synthetic numbers; a diagnosis, not a result table::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/diagnose_adaclip_image_head.py \\
        --data-root data --steps 300 --out adaclip_diag.json [--logit-scale 10] [--no-hsf]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding synthetic/default/<world> (made if missing)")
    parser.add_argument("--steps", type=int, default=300, help="batch-1 training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logit-scale", type=float, default=None, help="override the fixed 100")
    parser.add_argument("--lr", type=float, default=None, help="override the recipe's 0.01")
    parser.add_argument("--no-hsf", action="store_true", help="image score from the class token alone")
    parser.add_argument("--out", default=None, help="write the per-step log and the evaluation as JSON")
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from dapo.data import collate_samples
    from dapo.engine.train import make_optimizer, training_step, training_vocabulary
    from dapo.experiments.runs import (
        load_profile_backbone,
        open_profile_dataset,
        predict_products,
        start_run,
        training_data,
    )
    from dapo.methods import make_model, preset

    overrides = {}
    if args.logit_scale is not None:
        overrides["logit_scale"] = args.logit_scale
    if args.no_hsf:
        overrides["use_hsf"] = False
    run = start_run("synthetic", data_root=args.data_root, seed=args.seed, device="cpu", precision="fp32")
    cfg = run.cfg
    backbone = load_profile_backbone(cfg, "cpu")
    recipe = preset("adaclip", seed=args.seed)
    training = recipe.training if args.lr is None else recipe.training.with_overrides(lr=args.lr)
    model = make_model("adaclip", backbone, seed=args.seed, **overrides)
    dataset = training_data(cfg, recipe)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed)).tolist()

    model.eval()
    probe = collate_samples([dataset[i] for i in order[:12]])
    with torch.no_grad():
        out = model(probe["image"], (), products=probe["product"])
    cosine = (out.text_embeddings[:, 0] * out.text_embeddings[:, 1]).sum(-1)
    gap = out.global_logits[:, 1] - out.global_logits[:, 0]
    print(f"init: cos(normal, abnormal text) {cosine.mean():.3f} (largest reachable |logit gap| "
          f"{(model.config.logit_scale * (2 - 2 * cosine).sqrt()).mean():.1f}); median |logit gap| {gap.abs().median():.2f}")

    captured = {}
    loss_terms = model.loss_terms

    def recording(output, labels, masks):
        captured["logits"] = output.global_logits.detach().float()[0]
        return loss_terms(output, labels, masks)

    model.loss_terms = recording
    optimizer = make_optimizer(list(model.learnable_parameters().values()), training)
    vocabulary = training_vocabulary(dataset)
    model.train()
    log = []
    for step in range(args.steps):
        batch = collate_samples([dataset[order[step % len(order)]]])
        values = training_step(model, optimizer, batch, vocabulary, precision="fp32")
        logits = captured["logits"]
        log.append({"step": step, "label": int(batch["label"][0]), "global": values["global"],
                    "local": values["local"], "gap": float(logits[1] - logits[0])})
    model.loss_terms = loss_terms
    losses = np.array([r["global"] for r in log])
    gaps = np.array([r["gap"] for r in log])
    labels = np.array([r["label"] for r in log])
    wrong = (gaps > 0) != (labels == 1)
    print(f"training: global loss > 10 in {np.mean(losses > 10):.3f} of the steps, < 0.01 in {np.mean(losses < 0.01):.3f}; "
          f"|logit gap| 10/50/90th percentiles {np.percentile(np.abs(gaps), [10, 50, 90]).round(1).tolist()}; "
          f"wrong side in {wrong.mean():.3f} of the steps")

    model.eval()
    evaluation = {}
    for name in cfg.dataset_roots:
        test = open_profile_dataset(cfg, name, split="test")
        scores, truth = [], []
        for _, _, batch, prediction in predict_products(model, test, device="cpu", precision="fp32", progress=False):
            scores += prediction["image_score"].float().tolist()
            truth += [int(v) for v in batch["label"]]
        scores, truth = np.array(scores), np.array(truth)
        evaluation[name] = {"image_auroc": float(roc_auc_score(truth, scores)), "images": len(truth),
                            "saturated": float(np.mean((scores < 1e-3) | (scores > 1 - 1e-3)))}
        print(f"{name}: image AUROC {100 * evaluation[name]['image_auroc']:.1f} over {len(truth)} images; "
              f"saturated scores {evaluation[name]['saturated']:.3f}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"args": vars(args), "log": log, "evaluation": evaluation}, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
