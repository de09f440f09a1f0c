"""Held-out paraphrases of MultiADS's templates and state phrases, whose wording the compact CLIP's
captions never use (the ``multiads_paraphrased`` preset; notebook 12's diagnosis (b) measures
their overlap with the captions, :mod:`dapo.experiments.prompt_overlap`)."""

from __future__ import annotations

#: Templates ("{}" = a state phrase); every word occurs in the captions, no trigram does.
PARAPHRASE_TEMPLATES: tuple[str, ...] = (
    "{}: close-up photo.",
    "photo: {}.",
    "close-up: {}.",
    "{}, close-up.",
    "{} in the photo.",
    "the photo: {}.",
    "{}, photo.",
    "photo, close-up: {}.",
)

#: Normal-state phrases ("{}" = the product).
PARAPHRASE_NORMAL_STATES: tuple[str, ...] = (
    "{} that is intact",
    "intact and clean {}",
    "{} in good condition",
    "flawless and intact {}",
    "{}, perfect and unblemished",
    "{} is normal",
    "{} showing no damage",
    "good and normal {}",
    "{} is without any damage",
    "the surface of {} is intact",
)

#: Defect-state phrases of the 13 defect types of the synthetic worlds ("{}" = the product).
PARAPHRASE_DEFECT_STATES: dict[str, tuple[str, ...]] = {
    "scratch": ("{} is scratched", "scratch marks in the {}", "scratched surface of {}",
                "defective {}: scratches", "{} surface, scratches"),
    "crack": ("{} is cracked", "crack lines in the {}", "cracked surface of {}",
              "defective {}: cracks", "{} surface, cracks"),
    "thread": ("{} is with loose threads", "stray threads in the {}", "a fibre in {}",
               "defective {}: threads", "{} surface, loose thread"),
    "cut": ("{} is cut", "a slit in the {}", "cut marks in {}",
            "defective {}: clean cut", "{} surface, cut"),
    "hole": ("{} is with holes", "a perforation in the {}", "holes in {}",
             "defective {}: a puncture", "{} surface, hole"),
    "contamination": ("{} is with contaminants", "dirt particles in the {}", "impurities in {}",
                      "defective {}: foreign particles", "{} surface, contamination"),
    "spot": ("{} is with spots", "coloured dots in the {}", "colour spots in {}",
             "defective {}: spot", "{} surface, spots"),
    "rust": ("{} is rusty", "rust patches in the {}", "corrosion in {}",
             "defective {}: rust spots", "{} surface, rust"),
    "burnt": ("{} is burnt", "burn marks in the {}", "charring in {}",
              "defective {}: scorch mark", "{} surface, burnt area"),
    "liquid": ("{} is with oil", "liquid stain in the {}", "liquid residue in {}",
               "defective {}: oil stain", "{} surface, liquid"),
    "missing": ("{} with parts absent", "absent pieces in the {}", "missing components in {}",
                "defective {}: missing part", "{} surface, missing"),
    "bent": ("{} is bent", "bent edge in the {}", "a dent in {}",
             "defective {}: bending", "{} surface, bend"),
    "flattening": ("{} is flattened", "squashed area in the {}", "flattened areas in {}",
                   "defective {}: pressed area", "{} surface, flattening"),
}


def paraphrase_overrides() -> dict:
    """The held-out lists as :class:`~dapo.methods.dapo.config.DAPOConfig` overrides of a MultiADS config."""
    return {"templates": PARAPHRASE_TEMPLATES, "normal_states": PARAPHRASE_NORMAL_STATES,
            "defect_states": dict(PARAPHRASE_DEFECT_STATES)}
