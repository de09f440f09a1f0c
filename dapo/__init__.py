"""DAPO companion: defect-aware hybrid prompt optimisation with progressive tuning.

Subpackages and modules (one job each) are described in docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
