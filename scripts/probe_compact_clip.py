"""How far any linear read-out of the compact CLIP's image tower gets on defect types.

    python scripts/probe_compact_clip.py                        # 4000 and 16000 fitting images
    python scripts/probe_compact_clip.py --fit-images 2000 --per-class 6

Fits a logistic-regression probe (scikit-learn, L2, ``--C``) on the image features (class
token after ``ln_post``, before the projection ``visual.proj``, in fp32: what the projection
trained in the text stage of :mod:`dapo.synthetic.pretrain` reads) of the first
``--fit-images`` images of the text stage's stream (images with two defect types left out),
and scores it on the held-out images of ``scripts/evaluate_compact_clip.py`` (stream seed 1,
18 per product and state), choosing among normal and the image's product's defect types as
zero-shot does. Zero-shot top-1 close to the probe's means the text tower reads out what the
image tower offers. SYNTHETIC numbers.
"""

from __future__ import annotations

import argparse

import numpy as np
import open_clip
import torch
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from dapo.synthetic.corpus import TEXT_STREAM, CorpusSpec, sample_image
from dapo.synthetic.generator import applicable_defects
from dapo.synthetic.pretrain import COMPACT_MODEL, COMPACT_WEIGHTS, locked_features, register_compact_config
from dapo.synthetic.zeroshot import heldout_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(COMPACT_WEIGHTS))
    parser.add_argument("--fit-images", type=int, nargs="+", default=[4000, 16000])
    parser.add_argument("--per-class", type=int, default=18)
    parser.add_argument("--seed", type=int, default=1, help="held-out stream seed")
    parser.add_argument("--pretrain-seed", type=int, default=0, help="seed of the text stage's image stream")
    parser.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the probe")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_compact_config()
    model = open_clip.create_model(COMPACT_MODEL, pretrained=args.weights).eval()
    spec = CorpusSpec()
    stream, fit_images, fit_y = [], [], []  # images with at most one defect type, and their stream index
    for i in tqdm(range(max(args.fit_images)), desc="fitting images"):
        image = sample_image(spec, args.pretrain_seed, TEXT_STREAM, i)[0]
        if len(image.defects) <= 1:
            stream.append(i)
            fit_images.append(image.image)
            fit_y.append(image.defects[0] if image.defects else "normal")
    fit_x, fit_y, stream = locked_features(model, fit_images).numpy(), np.array(fit_y), np.array(stream)
    items = heldout_set(seed=args.seed, per_class=args.per_class)
    test_x = locked_features(model, [item.image.image for item in items]).numpy()
    print(f"held-out images: {len(items)} (seed {args.seed}); SYNTHETIC")
    print("| fitting images | probe defect-type top-1 |\n| --- | --- |")
    for n in args.fit_images:
        used = int((stream < n).sum())
        probe = LogisticRegression(max_iter=3000, C=args.C).fit(fit_x[:used], fit_y[:used])
        columns = {name: k for k, name in enumerate(probe.classes_)}
        scores = probe.predict_proba(test_x)
        hits = [max(("normal", *applicable_defects(item.image.product)), key=lambda c: row[columns[c]]) == item.label
                for row, item in zip(scores, items)]
        print(f"| {n} | {np.mean(hits):.4f} |")


if __name__ == "__main__":
    main()
