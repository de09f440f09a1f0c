"""Every method of the companion behind one contract (:mod:`dapo.methods.contract`) and one
registry (:mod:`dapo.methods.registry`).

``make_model("winclip", backbone)``, ``preset("dapo", seed=1, lam=8)``, ``available()``. The
DAPO family (:mod:`dapo.methods.dapo`) holds DAPO, its ablation presets, MultiADS(-F),
AnomalyCLIP and CLIP-AC; the other methods are modules of their own.
"""

from __future__ import annotations

# importing a method's module registers its presets (the registry's entries come from these imports)
from dapo.methods import (  # noqa: F401
    aaclip,
    adaclip,
    anomalyclip,
    aprilgan,
    clip_ac,
    cocoop,
    faprompt,
    multiads,
    vip2clip,
    winclip,
)
from dapo.methods.dapo import presets as _dapo_presets  # noqa: F401
from dapo.methods.registry import (  # noqa: F401
    FAMILIES,
    METHODS,
    Method,
    Preset,
    available,
    config_fields,
    config_for,
    get,
    make_model,
    preset,
    register,
    table3_methods,
    training_for,
)
