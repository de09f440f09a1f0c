"""DAPO's model family: the configuration (:mod:`~dapo.methods.dapo.config`), the model
(:mod:`~dapo.methods.dapo.model`), its prompts, progressive deep tokens, DPAM and losses.
MultiADS, AnomalyCLIP and CLIP-AC are configurations of the same family."""
