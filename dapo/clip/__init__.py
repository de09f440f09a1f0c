"""The frozen CLIP encoders every method runs on: OpenCLIP models and the compact backbone
(:mod:`dapo.clip.backbone`), and the tokenizer's limits (:mod:`dapo.clip.vocabulary`)."""
