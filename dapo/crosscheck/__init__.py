"""Cross-checks of presets against the authors' released code, number for number.

Each check runs a release in a subprocess with its own import path (the release is never
imported into :mod:`dapo` and none of its code is copied here: DAPO and MultiADS are AGPL):
:mod:`dapo.crosscheck.driver` writes fixed synthetic inputs and learned parameters to a file,
launches the release side script (``release_<name>.py``, our own code that imports the
release's classes by name from the user's checkout), and :mod:`dapo.crosscheck.compare` puts
the two sides' quantities side by side. Checks: :mod:`~dapo.crosscheck.dapo_check` (``dapo_official``
against boschresearch/defect-aware-prompt-optimization) and :mod:`~dapo.crosscheck.multiads_check`
(``multiads`` against boschresearch/MultiADS) and :mod:`~dapo.crosscheck.anomalyclip_check`
(``anomalyclip`` against zqhang/AnomalyCLIP, on the compact weights run with QuickGELU by both sides) and
:mod:`~dapo.crosscheck.adaclip_check` (``adaclip`` against caoyunkang/AdaCLIP, its k-means replayed with ours). ``python -m dapo.crosscheck dapo --release PATH [--preset NAME]``.
"""
