"""Captions of the pretraining corpus and the prompts of the zero-shot evaluation.

Captions are varied in the spirit of CLIP's templates: the exact defect superclass word or a
paraphrase, the product name or the generic word "object", generic anomaly words
("damaged", "anomaly", ...) and normal words ("flawless", "normal", ...). Each caption
carries a :class:`CaptionKey` that says which images it truthfully describes; the
contrastive loss uses it to treat every matching image-caption pair in a batch as positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GENERIC_OBJECT = "object"

DEFECT_NOUNS: dict[str, tuple[str, ...]] = {
    "scratch": ("scratch", "a scratch", "scratches", "scratch marks", "a scratched surface"),
    "crack": ("crack", "a crack", "cracks", "crack lines", "a cracked surface"),
    "thread": ("thread", "a thread", "a loose thread", "stray threads", "a fibre"),
    "cut": ("cut", "a cut", "a slit", "cut marks", "a clean cut"),
    "hole": ("hole", "a hole", "holes", "a puncture", "a perforation"),
    "contamination": ("contamination", "contaminants", "foreign particles", "dirt particles", "impurities"),
    "spot": ("spot", "a spot", "spots", "colour spots", "coloured dots"),
    "rust": ("rust", "rust patches", "corrosion", "a rusty patch", "rust spots"),
    "burnt": ("burnt", "burn marks", "a scorch mark", "a burnt area", "charring"),
    "liquid": ("liquid", "oil", "a liquid stain", "an oil stain", "liquid residue"),
    "missing": ("missing", "a missing part", "missing parts", "missing components", "absent pieces"),
    "bent": ("bent", "a bend", "a bent edge", "bending", "a dent"),
    "flattening": ("flattening", "a flattened edge", "a squashed area", "a pressed area", "flattened areas"),
}

ABNORMAL_WORDS = ("damaged", "defective", "flawed", "anomalous", "abnormal", "faulty")
NORMAL_WORDS = ("normal", "flawless", "perfect", "good", "intact", "unblemished")

DEFECT_TEMPLATES = (
    "a photo of a {p} with {n}.",
    "a {p} with {n}.",
    "{n} on a {p}.",
    "a close-up photo of {n} on the {p}.",
    "a {g} {p} with {n}.",
    "a photo of a {g} {p} with {n}.",
    "a {p} with a {w} defect.",
    "a {p} with a {w} anomaly.",
    "a photo of a {p} that has {n}.",
    "there is {n} on the {p}.",
    "a {p} showing {n}.",
)
ANOMALOUS_TEMPLATES = (
    "a photo of a {g} {p}.",
    "a {g} {p}.",
    "a {p} with an anomaly.",
    "a {p} with a defect.",
    "an anomaly on a {p}.",
    "a photo of a {p} with damage.",
)
NORMAL_TEMPLATES = (
    "a photo of a {o} {p}.",
    "a {o} {p}.",
    "a {p} without defect.",
    "a {p} without any flaw.",
    "a normal {p} with no anomaly.",
    "a photo of a {p} in perfect condition.",
)
PRODUCT_TEMPLATES = ("a photo of a {p}.", "a photo of the {p}.", "a close-up photo of a {p}.", "a {p}.")

# zero-shot evaluation prompts (a fixed subset of the caption templates, exact words only)
EVAL_DEFECT_TEMPLATES = ("a photo of a {p} with {w}.", "a {p} with a {w} defect.", "{w} on a {p}.")
EVAL_NORMAL_TEMPLATES = ("a photo of a flawless {p}.", "a photo of a normal {p}.", "a {p} without defect.")
EVAL_PRODUCT_TEMPLATES = ("a photo of a {p}.", "a photo of the {p}.", "a close-up photo of a {p}.")


@dataclass(frozen=True)
class CaptionKey:
    """What a caption asserts.

    ``product`` is ``None`` for captions about a generic "object"; ``kind`` is ``"exact"``
    (exactly ``defects``; empty = normal), ``"anomalous"`` (some defect) or ``"any"``
    (the product only).
    """

    product: str | None
    kind: str
    defects: frozenset[str] = frozenset()

    def describes(self, product: str, defects: Sequence[str]) -> bool:
        """Whether the caption is true of an image of ``product`` with ``defects``."""
        if self.product is not None and self.product != product:
            return False
        if self.kind == "any":
            return True
        if self.kind == "anomalous":
            return bool(defects)
        return self.defects == frozenset(defects)


@dataclass(frozen=True)
class CaptionPolicy:
    """Probabilities of the caption kinds.

    ``generic_object``: the product name is replaced by "object"; ``anomalous``: a defective
    image gets a caption that names no type; ``product_only``: any image gets a caption that
    names only the product; ``exact_word``: the defect is named by its superclass word rather
    than a paraphrase.
    """

    generic_object: float = 0.15
    anomalous: float = 0.12
    product_only: float = 0.1
    exact_word: float = 0.5


def product_words(product: str) -> str:
    return product.replace("_", " ")


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _defect_noun(rng: np.random.Generator, defect: str, policy: CaptionPolicy) -> str:
    nouns = DEFECT_NOUNS[defect]
    return nouns[0] if rng.random() < policy.exact_word else _choice(rng, nouns[1:])


def sample_caption(rng: np.random.Generator, product: str, defects: Sequence[str],
                   policy: CaptionPolicy = CaptionPolicy()) -> tuple[str, CaptionKey]:
    """A random true caption of an image of ``product`` with ``defects`` (``()`` = normal)."""
    unknown = [d for d in defects if d not in DEFECT_NOUNS]
    if unknown:
        raise KeyError(f"no caption words for defects {unknown}; known: {sorted(DEFECT_NOUNS)}")
    if rng.random() < policy.product_only:
        return _choice(rng, PRODUCT_TEMPLATES).format(p=product_words(product)), CaptionKey(product, "any")
    generic = rng.random() < policy.generic_object
    subject, key_product = (GENERIC_OBJECT, None) if generic else (product_words(product), product)
    if defects and rng.random() < policy.anomalous:
        text = _choice(rng, ANOMALOUS_TEMPLATES).format(p=subject, g=_choice(rng, ABNORMAL_WORDS))
        return text, CaptionKey(key_product, "anomalous")
    return exact_caption(rng, subject, defects, policy), CaptionKey(key_product, "exact", frozenset(defects))


def exact_caption(rng: np.random.Generator, subject: str, defects: Sequence[str],
                  policy: CaptionPolicy = CaptionPolicy()) -> str:
    """A caption that names exactly ``defects`` (``()``: a normal caption) of ``subject``
    (product words or "object"), from the training templates."""
    if not defects:
        return _choice(rng, NORMAL_TEMPLATES).format(p=subject, o=_choice(rng, NORMAL_WORDS))
    order = list(defects)
    rng.shuffle(order)
    noun = " and ".join(_defect_noun(rng, d, policy) for d in order)
    word = " and ".join(order)
    return _choice(rng, DEFECT_TEMPLATES).format(p=subject, n=noun, w=word, g=_choice(rng, ABNORMAL_WORDS))


def class_prompts(product: str, defect: str | None) -> list[str]:
    """Zero-shot prompts of one state of ``product``: normal (``None``) or a defect superclass."""
    p = product_words(product)
    if defect is None:
        return [t.format(p=p) for t in EVAL_NORMAL_TEMPLATES]
    return [t.format(p=p, w=defect) for t in EVAL_DEFECT_TEMPLATES]


def product_prompts(product: str) -> list[str]:
    """Zero-shot prompts naming only the product."""
    return [t.format(p=product_words(product)) for t in EVAL_PRODUCT_TEMPLATES]
