"""Plumbing with no knowledge of the method: atomic writes, repository paths, precision,
progress lines, the run ledger, safe loading of files and "did you mean" suggestions."""
