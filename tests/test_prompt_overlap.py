"""Caption overlap of prompt lists and the held-out paraphrases (diagnosis (b))."""

import math

import numpy as np
import pytest

from dapo.experiments import prompt_overlap as O
from dapo.synthetic.captions import DEFECT_NOUNS, CaptionPolicy, product_words, sample_caption
from dapo.synthetic.products import PRODUCTS


def test_words_read_the_product_slot_and_object_alike_and_drop_punctuation():
    assert O.words("A close-up photo of the {}.") == ("a", "close-up", "photo", "of", "the", "<p>")
    assert O.words("scratch anomaly object") == ("scratch", "anomaly", "<p>")
    assert O.words("photo, close-up: {}") == ("photo", "close-up", "<p>")
    assert O.ngrams(("a", "b", "c"), 2) == {("a", "b"), ("b", "c")}
    assert O.ngrams(("a",), 2) == set()
    with pytest.raises(ValueError, match="n must be >= 1"):
        O.ngrams(("a",), 0)


def test_overlap_on_toy_captions_worked_by_hand():
    captions = ["a photo of a {}.", "a {} with a scratch."]
    vocabulary, corpus = O.vocabulary_of(captions), O.corpus_of(captions)
    same = O.phrase_overlap("A photo of a {}", vocabulary, corpus)
    assert same["verbatim"] == 1.0 and same["share_1"] == same["share_2"] == same["share_4"] == 1.0
    # "photo of the {}": bigrams photo-of (found), of-the, the-<p> (not): 1/3; trigrams: none of 2
    other = O.phrase_overlap("photo of the {}", vocabulary, corpus)
    assert other["verbatim"] == 0.0
    assert other["share_1"] == pytest.approx(3 / 4)  # photo, of, <p> found; "the" not
    assert other["share_2"] == pytest.approx(1 / 3) and other["share_3"] == 0.0 and other["share_4"] == 0.0
    assert math.isnan(O.phrase_overlap("scratch {}", vocabulary, corpus)["share_3"])  # two words: no trigram
    assert O.phrase_overlap("{} with a", vocabulary, corpus)["verbatim"] == 1.0  # inside the second caption
    summary = O.overlap_summary({"toy": ["a photo of a {}", "photo of the {}"]}, vocabulary, corpus)
    assert summary.loc["toy", "verbatim"] == 0.5 and summary.loc["toy", "any_3"] == 0.5
    assert summary.loc["toy", "share_2"] == pytest.approx((1 + 1 / 3) / 2)
    assert summary.loc["toy", "coverage"] == pytest.approx(3 / 4)  # photo, of, a found; "the" not
    with pytest.raises(ValueError, match="'empty' is empty"):
        O.overlap_summary({"empty": []}, vocabulary, corpus)


def test_the_enumerated_captions_hold_every_caption_the_generator_writes():
    rng = np.random.default_rng(0)
    texts = {O.words(text) for text in O.caption_texts()}
    products = sorted(PRODUCTS)
    defects = sorted(DEFECT_NOUNS)
    policy = CaptionPolicy()
    for _ in range(400):
        product = products[int(rng.integers(len(products)))]
        count = int(rng.integers(3))
        chosen = tuple(rng.choice(defects, size=count, replace=False)) if count else ()
        caption, _ = sample_caption(rng, product, chosen, policy)
        assert O.words(caption.replace(product_words(product), O.SLOT)) in texts, caption


def test_the_paraphrases_are_held_out_from_the_captions_yet_use_only_caption_words():
    lists = O.paraphrase_lists()
    for name, phrases in lists.items():
        for phrase in phrases:
            overlap = O.phrase_overlap(phrase)
            assert overlap["verbatim"] == 0.0, f"{name}: {phrase!r} occurs verbatim in the captions"
            assert not overlap["share_3"] > 0, f"{name}: {phrase!r} shares a word trigram with the captions"
    assert O.word_coverage([p for phrases in lists.values() for p in phrases]) == 1.0
    assert set(O.PARAPHRASE_DEFECT_STATES) == set(DEFECT_NOUNS)
    assert all(phrase.count("{}") == 1 for phrase in (*O.PARAPHRASE_NORMAL_STATES, *O.PARAPHRASE_TEMPLATES))
    assert all(p.count("{}") == 1 for phrases in O.PARAPHRASE_DEFECT_STATES.values() for p in phrases)


def test_the_measure_finds_multiads_phrases_that_are_captions():
    assert O.occurs_verbatim("a photo of a {}.") and O.occurs_verbatim("{} without defect")
    assert not O.occurs_verbatim("a jpeg corrupted photo of a {}.")
    summary = O.overlap_summary(O.multiads_lists())
    assert summary.loc["templates", "verbatim"] > 0 and summary.loc["templates", "coverage"] < 1
    assert summary.loc["prompts", "phrases"] == 35 * (10 + 6 * len(DEFECT_NOUNS))
