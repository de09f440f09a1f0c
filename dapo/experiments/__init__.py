"""The paper's experiments as the notebooks run them: profiles, runs and their provenance
(:mod:`~dapo.experiments.runs`), sweeps with their caches, ablations, the fidelity study, the
diagnoses, the tables, figures and computed conclusions, and the reproduction tooling."""
