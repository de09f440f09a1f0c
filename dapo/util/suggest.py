""""Did you mean" for a mistyped name: one message naming the unknown name and the known ones.

Used wherever a user types a dataset name (profiles, notebook parameters, ``--dataset``,
:func:`dapo.data.load_knowledge`), so a misspelling stops with the same kind of message everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name nearest to ``name`` (case-insensitive, :func:`difflib.get_close_matches`), if any."""
    known = list(known)
    folded = {k.casefold(): k for k in known}
    if name.casefold() in folded:
        return folded[name.casefold()]
    matches = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[matches[0]] if matches else None


def unknown_name(what: str, name: object, known: Iterable[str]) -> str:
    """``"unknown <what> 'x'; did you mean 'y'? known: a, b, c"`` (no suggestion when none is close)."""
    known = sorted(dict.fromkeys(known))
    guess = closest(name, known) if isinstance(name, str) else None
    hint = f"; did you mean {guess!r}?" if guess else ";"
    return f"unknown {what} {name!r}{hint} known: {', '.join(known)}"
