"""How close handcrafted prompts are to the compact CLIP's pretraining captions (diagnosis (b)).

The synthetic profile's text tower learned language only from the captions of
:mod:`dapo.synthetic.captions`. A prompt list whose phrases occur in those captions word for
word is in-distribution for it, one with new wording is not; this module measures which.

* :func:`caption_texts` enumerates every caption the generator can write, with the product
  (or the generic word "object") replaced by the slot ``<p>``: product names are facts of the
  world that prompts and captions share by design, the wording around them is what is measured.
* :func:`words` / :func:`ngrams` normalise text the same way on both sides (lower case, ``{}``
  read as the product slot, punctuation dropped).
* :func:`phrase_overlap` / :func:`overlap_summary`: for each phrase, whether it occurs verbatim
  (as a contiguous word sequence of some caption) and the share of its word n-grams that occur
  in the captions.
* :data:`PARAPHRASE_TEMPLATES`, :data:`PARAPHRASE_NORMAL_STATES`, :data:`PARAPHRASE_DEFECT_STATES`:
  MultiADS-style prompt lists (templates x state phrases) for the 13 defect types of the
  synthetic worlds, held out from the captions: every word is one the captions use (so every
  token was trained), but no prompt shares a word trigram with any caption and no state phrase
  occurs verbatim. They read stilted by construction.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from string import Formatter

import pandas as pd

from dapo.methods.paraphrases import (  # noqa: F401 (public here too)
    PARAPHRASE_DEFECT_STATES,
    PARAPHRASE_NORMAL_STATES,
    PARAPHRASE_TEMPLATES,
    paraphrase_overrides,
)
from dapo.synthetic import captions as C

SLOT = "<p>"
MAX_N = 4
_WORD = re.compile(r"<p>|[a-z0-9][a-z0-9'-]*")


def words(text: str) -> tuple[str, ...]:
    """Normalised words of a prompt or caption: lower case, ``{}`` and ``<p>`` = the product slot,
    "object" = the product slot too (the captions' generic subject), punctuation dropped."""
    found = _WORD.findall(text.replace("{}", f" {SLOT} ").lower())
    return tuple(SLOT if word == C.GENERIC_OBJECT else word for word in found)


def ngrams(sequence: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The word n-grams of a word sequence (empty when it is shorter than ``n``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return {tuple(sequence[i:i + n]) for i in range(len(sequence) - n + 1)}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(template) if name}


def _filled(template: str, options: Mapping[str, Sequence[str]]) -> Iterable[str]:
    """Every filling of ``template`` by the options of the fields it uses."""
    used = sorted(_fields(template) & set(options))
    for values in itertools.product(*(options[name] for name in used)):
        yield template.format(p=SLOT, **dict(zip(used, values)))


@functools.lru_cache(maxsize=1)
def caption_texts() -> tuple[str, ...]:
    """Every caption :func:`dapo.synthetic.captions.sample_caption` and ``exact_caption`` can
    write (one or two defect types per image, as the corpus draws them), product = ``<p>``."""
    texts: set[str] = set(_filled_all(C.PRODUCT_TEMPLATES, {}))
    texts |= set(_filled_all(C.NORMAL_TEMPLATES, {"o": C.NORMAL_WORDS}))
    texts |= set(_filled_all(C.ANOMALOUS_TEMPLATES, {"g": C.ABNORMAL_WORDS}))
    defects = list(C.DEFECT_NOUNS)
    combos = [(d,) for d in defects] + list(itertools.permutations(defects, 2))
    for combo in combos:
        nouns = [" and ".join(choice) for choice in itertools.product(*(C.DEFECT_NOUNS[d] for d in combo))]
        options = {"n": nouns, "w": [" and ".join(combo)], "g": C.ABNORMAL_WORDS}
        texts |= set(_filled_all(C.DEFECT_TEMPLATES, options))
    return tuple(sorted(texts))


def _filled_all(templates: Sequence[str], options: Mapping[str, Sequence[str]]) -> Iterable[str]:
    for template in templates:
        yield from _filled(template, options)


def vocabulary_of(texts: Iterable[str], max_n: int = MAX_N) -> dict[int, frozenset[tuple[str, ...]]]:
    """``{n: every word n-gram of texts}`` for n = 1..``max_n``."""
    grams: dict[int, set] = {n: set() for n in range(1, max_n + 1)}
    for text in texts:
        sequence = words(text)
        for n in grams:
            grams[n] |= ngrams(sequence, n)
    return {n: frozenset(values) for n, values in grams.items()}


def corpus_of(texts: Iterable[str]) -> str:
    """Texts as lines of space-separated normalised words (what :func:`occurs_verbatim` searches)."""
    return "\n".join(" " + " ".join(words(text)) + " " for text in texts)


@functools.lru_cache(maxsize=1)
def caption_vocabulary() -> dict[int, frozenset[tuple[str, ...]]]:
    """:func:`vocabulary_of` the captions (n = 1..:data:`MAX_N`)."""
    return vocabulary_of(caption_texts())


@functools.lru_cache(maxsize=1)
def _caption_lines() -> str:
    return corpus_of(caption_texts())


def occurs_verbatim(phrase: str, corpus: str | None = None) -> bool:
    """Whether the phrase's words occur as a contiguous word sequence of some caption
    (``corpus``: :func:`corpus_of` some texts; default the generator's captions)."""
    sequence = words(phrase)
    if not sequence:
        raise ValueError(f"phrase {phrase!r} has no words")
    if corpus is None:  # every n-gram of a verbatim phrase is a caption n-gram: a quick test first
        vocabulary = caption_vocabulary()
        n = min(len(sequence), MAX_N)
        if not ngrams(sequence, n) <= vocabulary[n]:
            return False
        corpus = _caption_lines()
    return f" {' '.join(sequence)} " in corpus


def phrase_overlap(phrase: str, vocabulary: Mapping[int, frozenset] | None = None, corpus: str | None = None,
                   max_n: int = MAX_N) -> dict[str, float]:
    """``verbatim`` (0/1) and ``share_n``: the share of the phrase's word n-grams found in the
    captions, n = 1..``max_n`` (NaN where the phrase has fewer than n words)."""
    vocabulary = caption_vocabulary() if vocabulary is None else vocabulary
    sequence = words(phrase)
    row = {"verbatim": float(occurs_verbatim(phrase, corpus))}
    for n in range(1, max_n + 1):
        grams = ngrams(sequence, n)
        row[f"share_{n}"] = len(grams & vocabulary[n]) / len(grams) if grams else float("nan")
    return row


def overlap_summary(lists: Mapping[str, Sequence[str]], vocabulary: Mapping[int, frozenset] | None = None,
                    corpus: str | None = None, max_n: int = 3) -> pd.DataFrame:
    """One row per named phrase list: ``phrases``; ``verbatim`` (share of phrases found verbatim);
    ``any_n`` (share of phrases with at least one n-gram in the captions) and ``share_n``
    (mean share of a phrase's n-grams found) for n = 1..``max_n``; ``coverage``
    (:func:`word_coverage`); values in [0, 1]."""
    rows = []
    for name, phrases in lists.items():
        if not phrases:
            raise ValueError(f"phrase list {name!r} is empty")
        per = pd.DataFrame([phrase_overlap(p, vocabulary, corpus, max_n) for p in phrases])
        row = {"list": name, "phrases": len(phrases), "verbatim": per["verbatim"].mean()}
        for n in range(1, max_n + 1):
            row[f"any_{n}"] = (per[f"share_{n}"] > 0).mean()
            row[f"share_{n}"] = per[f"share_{n}"].mean()
        row["coverage"] = word_coverage(phrases, vocabulary)
        rows.append(row)
    return pd.DataFrame(rows).set_index("list")


def prompts(templates: Sequence[str], states: Sequence[str]) -> list[str]:
    """Every template filled with every state phrase (the product slot kept as ``{}``)."""
    return [template.replace("{}", state) for state in states for template in templates]


# ----------------------------------------------------------------------------- held-out paraphrases

def multiads_lists(defects: Sequence[str] | None = None) -> dict[str, list[str]]:
    """MultiADS's own lists as the synthetic profile uses them (knowledge base; ``defects``
    default: the 13 caption defect types): templates, normal states, defect states, and the
    prompts (templates x states) they make."""
    from dapo.data.knowledge import multiads_state_prompts, multiads_templates, normal_state_prompts

    defects = list(C.DEFECT_NOUNS) if defects is None else list(defects)
    templates, normal = multiads_templates(), normal_state_prompts()
    defect_states = [phrase for defect in defects for phrase in multiads_state_prompts(defect)]
    return {"templates": templates, "normal states": normal, "defect states": defect_states,
            "prompts": prompts(templates, normal + defect_states)}


def paraphrase_lists() -> dict[str, list[str]]:
    """The held-out lists in the layout of :func:`multiads_lists`."""
    templates, normal = list(PARAPHRASE_TEMPLATES), list(PARAPHRASE_NORMAL_STATES)
    defect_states = [phrase for phrases in PARAPHRASE_DEFECT_STATES.values() for phrase in phrases]
    return {"templates": templates, "normal states": normal, "defect states": defect_states,
            "prompts": prompts(templates, normal + defect_states)}


def dapo_literal_lists(defects: Sequence[str] | None = None, normal_word: str = "normal") -> dict[str, list[str]]:
    """The literal words of DAPO's learned prompts (Eq. 1-2, context tokens left out):
    ``"<normal_word> object"`` and ``"<defect words> anomaly object"``."""
    from dapo.methods.dapo.prompts import defect_phrase

    defects = list(C.DEFECT_NOUNS) if defects is None else list(defects)
    return {"prompts": [f"{normal_word} object", *(f"{defect_phrase(d)} anomaly object" for d in defects)]}


def word_coverage(phrases: Iterable[str], vocabulary: Mapping[int, frozenset] | None = None) -> float:
    """Share of the distinct words of ``phrases`` (product slot excluded) that the captions use:
    the others reach the text tower as tokens it never saw in training (unless their BPE
    pieces occur inside caption words)."""
    vocabulary = {gram[0] for gram in (caption_vocabulary() if vocabulary is None else vocabulary)[1]}
    distinct = {word for phrase in phrases for word in words(phrase) if word != SLOT}
    if not distinct:
        raise ValueError("no words to cover")
    return len(distinct & vocabulary) / len(distinct)
