"""The words the official DAPO code puts in its *training* prompts for MVTec-AD's defect types.

The released training script (``train.py``, lines 115-129 and 353-358 of
boschresearch/defect-aware-prompt-optimization) names MVTec-AD's 20 defect classes with words
that differ from the knowledge base's superclass names used at test time (e.g. ``color`` is
trained as "discoloration", ``combined`` as "compound", ``poke`` as "puncture"). The paper is
silent on the training words, so :class:`dapo.methods.recipe.TrainConfig` follows the code
(``train_words="dapo_official"``) on the ``mvtec`` dataset; other datasets, which the released
script cannot train on, keep their knowledge-base names.
"""

from __future__ import annotations

#: MVTec-AD superclass (knowledge base) -> word in the official DAPO training prompts.
DAPO_MVTEC_TRAINING_WORDS = {
    "bent": "bent", "broken": "broken", "color": "discoloration", "combined": "compound",
    "contamination": "contamination", "crack": "crack", "cut": "cut", "fabric": "fabric",
    "faulty imprint": "faulty imprint", "glue": "gluing", "hole": "hole", "missing": "missing",
    "poke": "puncture", "rough": "rough", "scratch": "scratch", "squeeze": "compressed",
    "thread": "threading", "liquid": "liquid", "misplaced": "misaligned", "damaged": "wear",
}


def official_training_words(dataset: str, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    """``vocabulary`` (superclass names, in ``type_mask`` order) as the official training words."""
    if dataset != "mvtec":
        return tuple(vocabulary)
    return tuple(DAPO_MVTEC_TRAINING_WORDS.get(name, name) for name in vocabulary)
