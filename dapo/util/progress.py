"""Progress bars that leave one final line in executed notebooks and logs.

``dapo.util.progress.tqdm`` is tqdm's text bar (``tqdm.std``: never the notebook widget, so no
"IProgress not found" warning without ipywidgets) in one of three modes, chosen by the
environment variable ``DAPO_PROGRESS``:

* ``live``: redrawn as it runs (tqdm's default); the default when stderr is a terminal;
* ``final``: nothing while it runs, then one line with the final count and time; the default
  elsewhere (a Jupyter kernel, papermill, a log file), so an executed notebook holds one line per
  bar instead of hundreds of redraws;
* ``off``: nothing.

Bars made with ``leave=False`` (inner loops) print nothing in ``final`` mode. Importing this
module silences tqdm's "IProgress not found" warning (raised when a dependency imports
``tqdm.auto`` in a kernel without ipywidgets).
"""

from __future__ import annotations

import os
import sys
import warnings

from tqdm.std import tqdm as _std_tqdm

# tqdm.auto (imported by dependencies such as huggingface_hub) warns at import in a Jupyter kernel
# without ipywidgets and falls back to text bars; the package's own bars never use it.
warnings.filterwarnings("ignore", message="IProgress not found")

ENV = "DAPO_PROGRESS"
MODES = ("live", "final", "off")


def mode() -> str:
    """The progress mode in force (see the module docstring)."""
    chosen = os.environ.get(ENV, "").strip().lower()
    if chosen and chosen not in MODES:
        raise ValueError(f"{ENV}={chosen!r}: expected one of {MODES}")
    if chosen:
        return chosen
    stream = sys.stderr
    return "live" if stream is not None and hasattr(stream, "isatty") and stream.isatty() else "final"


class tqdm(_std_tqdm):  # noqa: N801 - a drop-in for tqdm.auto.tqdm
    """``tqdm.std.tqdm`` honouring :func:`mode`."""

    def __init__(self, *args, **kwargs):
        current = mode()
        if current == "off":
            kwargs["disable"] = True
        self._final_only = current == "final" and not kwargs.get("disable", False)
        if self._final_only:
            kwargs["delay"] = float("inf")  # never drawn while running
        super().__init__(*args, **kwargs)

    def display(self, *args, **kwargs):
        if getattr(self, "_final_only", False):  # an explicit refresh (set_postfix) draws nothing either
            return None
        return super().display(*args, **kwargs)

    def close(self):
        if getattr(self, "_final_only", False) and not self.disable and self.leave:
            self._final_only = False
            line, fp = self.__str__(), self.fp
            super().close()
            fp.write(line + "\n")
            fp.flush()
            return
        super().close()


__all__ = ["ENV", "MODES", "mode", "tqdm"]
