"""MAD (PAD benchmark): MAD-Sim and MAD-Real, both in the MVTec-AD folder convention.

Layout (MAD-Sim as released; MAD-Real uses the same structure)::

    <root>/01Gorilla/train/good/0.png ...
    <root>/01Gorilla/test/{good,Burrs,Missing,Stains}/0.png ...
    <root>/01Gorilla/ground_truth/{Burrs,Missing,Stains}/0_mask.png
    <root>/01Gorilla/transforms.json, license, readme      (ignored)

Product names drop the leading number (``01Gorilla`` -> ``gorilla``). Folders map to the
superclasses burrs, missing, stains (``mad_sim.yaml`` / ``mad_real.yaml``).
"""

from __future__ import annotations

from dapo.data.mvtec import MVTecStyleDataset


class MADSim(MVTecStyleDataset):
    """MAD-Sim: 20 LEGO toys rendered in simulation."""

    knowledge_name = "mad_sim"


class MADReal(MVTecStyleDataset):
    """MAD-Real: 10 LEGO toys photographed."""

    knowledge_name = "mad_real"
