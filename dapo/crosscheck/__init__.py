"""Cross-checks of presets against the authors' released code, number for number.

Each check runs a release in a subprocess with its own import path (the release is never
imported into :mod:`dapo` and none of its code is copied here: DAPO and MultiADS are AGPL):
:mod:`dapo.crosscheck.driver` writes fixed synthetic inputs and learned parameters to a file,
launches the release side script (``release_<name>.py``, our own code that imports the
release's classes by name from the user's checkout), and :mod:`dapo.crosscheck.compare` puts
the two sides' quantities side by side. ``python -m dapo.crosscheck dapo --release PATH``.
"""
