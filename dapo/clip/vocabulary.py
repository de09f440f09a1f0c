"""Defect vocabularies: one validator for the model, :class:`~dapo.engine.inference.Predictor` and the
command line, and the check that every prompt fits the text tower.

A vocabulary is an ordered sequence of defect names; its order fixes the channel ids of the
maps (``k`` = ``vocabulary[k - 1]``). :func:`check_vocabulary` refuses what would silently
change the classes: a plain string (``"hole"`` would be the four classes h, o, l, e), an
unordered set, a non-string or empty entry, and names that are the same defect once
normalised (:func:`normalise_name`).

OpenCLIP's tokenizer cuts a prompt longer than the context length (77 tokens for ViT-L-14,
32 for the compact synthetic tower) without a word, so two long names that differ only at
the end would get identical embeddings. :func:`check_prompts_fit` counts every prompt's
tokens before the model tokenises it and names the defect whose prompt does not fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence, Set


class PromptTooLongError(ValueError):
    """A prompt needs more tokens than the text tower's context length (it would be cut)."""


def normalise_name(name: str) -> str:
    """The form names are compared in: stripped, case-folded, underscores as spaces, single spaces."""
    return " ".join(name.replace("_", " ").split()).casefold()


def check_vocabulary(vocabulary: Iterable[str], *, allow_empty: bool = False,
                     source: str = "vocabulary") -> tuple[str, ...]:
    """Validate a vocabulary and return it as a tuple (names kept as written).

    ``allow_empty``: binary configurations ignore the names, so they may get none. ``source``
    names the argument in the messages (e.g. ``"--vocabulary"``). Raises ``TypeError`` for a
    string, a set, a non-iterable or a non-string entry, ``ValueError`` for an empty vocabulary,
    an empty or whitespace-only name and names equal after :func:`normalise_name`; each message
    names the entry (index and value).
    """
    if isinstance(vocabulary, (str, bytes)):
        raise TypeError(f"{source} must be a sequence of defect names, not the string {vocabulary!r} "
                        f"(it would be read letter by letter); pass ({vocabulary!r},)")
    if isinstance(vocabulary, Set):
        raise TypeError(f"{source} must be ordered (its order numbers the map channels), not a "
                        f"{type(vocabulary).__name__}; pass sorted(...)")
    try:
        names = tuple(vocabulary)
    except TypeError:
        raise TypeError(f"{source} must be a sequence of defect names, not {vocabulary!r}") from None
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"{source} entry {index} is {name!r} ({type(name).__name__}), not a defect name (str)")
        if not name.strip():
            raise ValueError(f"{source} entry {index} is {name!r}: an empty or whitespace-only defect name")
        key = normalise_name(name)
        if key in seen:
            first = seen[key]
            how = "repeats" if names[first] == name else f"is the same defect once normalised ({key!r}) as"
            raise ValueError(f"{source} entry {index} ({name!r}) {how} entry {first} ({names[first]!r}); "
                             f"every defect name must be distinct")
        seen[key] = index
    if not names and not allow_empty:
        raise ValueError(f"{source} is empty: a defect-aware model needs at least one defect name")
    return names


def context_length(tokenizer, positions: int | None = None) -> int:
    """Tokens a prompt may take: the tokenizer's context length, capped by the text tower's
    positional embedding rows (``positions``) when given."""
    limit = getattr(tokenizer, "context_length", None) or positions
    if limit is None:
        raise TypeError(f"cannot tell the context length of the tokenizer {type(tokenizer).__name__}")
    return int(min(limit, positions) if positions else limit)


def token_count(tokenizer, text: str) -> int:
    """Tokens ``text`` needs with its start and end tokens (CLIP BPE or Hugging Face tokenizers)."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)
    if callable(inner):
        return len(inner(text)["input_ids"])
    raise TypeError(f"cannot count the tokens of a prompt with the tokenizer {type(tokenizer).__name__}")


def check_prompts_fit(tokenizer, limit: int, prompts: Sequence[tuple[str, str, str]], layout: str,
                      hint: str = "use a shorter defect name") -> None:
    """Raise :class:`PromptTooLongError` for the first prompt longer than ``limit`` tokens.

    ``prompts``: ``(state, text, words)`` with ``words`` the state's own words in ``text``
    (the defect phrase; ``""`` for none). ``layout`` describes the rest of the prompt for the
    message (e.g. ``"4 deep-token and 5 context placeholders, 'anomaly object'"``), ``hint``
    what to do about it.
    """
    for state, text, words in prompts:
        needed = token_count(tokenizer, text)
        if needed <= limit:
            continue
        message = (f"the prompt of {state!r} needs {needed} tokens but the text tower holds {limit}, so the "
                   f"tokenizer would cut it and names that differ only at the end would get the same embedding")
        own = token_count(tokenizer, words) - 2 if words else 0
        if own and re.search(rf"(?<!\w){re.escape(words.casefold())}(?!\w)", text.casefold()):
            fixed = needed - own
            room = (f"leaving {limit - fixed} for the defect's words {words!r}, which take {own}" if fixed < limit
                    else f"leaving no room for the defect's words {words!r} ({own})")
            message += f": the start and end tokens, {layout} take {fixed}, {room}"
        else:
            message += f" (prompt: {text!r})"
        raise PromptTooLongError(f"{message}; {hint}")
