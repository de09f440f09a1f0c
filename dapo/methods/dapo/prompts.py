"""Prompt construction: hybrid defect-aware prompts (Eq. 1-3) and handcrafted prompt lists.

A learned prompt is tokenised as text with placeholder words, e.g. for l = 5 context tokens
and 4 deep text tokens::

    [SOT] X X X X | X X X X X | scratch anomaly object [EOT]
          deep U_j  context W   literal words

The placeholder embeddings are replaced by learnable vectors before the text transformer
(context) or at each layer (deep tokens, :mod:`dapo.methods.dapo.progressive`). Because the words stay real
tokens, the end-of-text position (used for pooling) is found exactly as in CLIP, and a defect
never seen in training needs only its name. Each of the E prompt sets has its own context;
all defect types share the abnormal context W (Eq. 1), the normal state has its own V (Eq. 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dapo.methods.dapo.config import DAPOConfig

PLACEHOLDER = "X"
GENERIC_OBJECT = "object"


def defect_phrase(name: str) -> str:
    """Literal words for a defect name: the knowledge base's wording, else the name itself.

    Names unknown to :mod:`dapo.data.knowledge` (any new defect) are used as written, with
    underscores read as spaces, so no retraining or registration is needed.
    """
    from dapo.data.knowledge import defect_words

    try:
        return defect_words(name)
    except KeyError:
        return name.replace("_", " ")


def product_phrase(product: str | None) -> str:
    """Product name as words for handcrafted prompts (``"object"`` when unknown)."""
    return product.replace("_", " ") if product else GENERIC_OBJECT


def learned_prompt_texts(config: DAPOConfig, vocabulary: Sequence[str], n_placeholders: int) -> list[str]:
    """One text per state (normal first) with ``n_placeholders`` placeholder words in front.

    ``defect_aware``: ``"<X..> normal object"`` and ``"<X..> <defect words> anomaly object"`` per
    defect; ``object_agnostic``: a single abnormal ``"<X..> <abnormal_word> object"``.
    """
    prefix = " ".join([PLACEHOLDER] * n_placeholders)

    def text(*words: str) -> str:
        return " ".join([prefix, *[w for w in words if w]]) + config.prompt_suffix

    normal = text(config.normal_word, config.object_word)
    if config.text_prompts == "object_agnostic":
        return [normal, text(config.abnormal_word, config.object_word)]
    return [normal] + [text(defect_phrase(d), config.abnormal_word, config.object_word) for d in vocabulary]


def prompt_layout(config: DAPOConfig, vocabulary: Sequence[str]) -> list[dict[str, str]]:
    """The learned prompts as readable token roles, one row per state (for notebook 01).

    ``U`` are the deep text tokens of layer 1 (their own ``U_j`` at deeper layers), ``V``/``W`` the
    normal/abnormal context shared across defect types, then the literal words (Eq. 1-2).
    """
    n_deep = config.text_deep_tokens if config.uses_text_deep_tokens and config.text_deep_layout == "prefix" else 0
    deep = " ".join(f"[U{i + 1}]" for i in range(n_deep))
    texts = learned_prompt_texts(config, vocabulary, 0)
    states = ["normal", *(["anomaly"] if config.text_prompts == "object_agnostic" else vocabulary)]
    rows = []
    for state, words in zip(states, texts):
        letter = "V" if state == "normal" else "W"
        context = " ".join(f"[{letter}{i + 1}]" for i in range(config.n_ctx))
        rows.append({"state": state, "prompt": " ".join(p for p in ("[SOT]", deep, context, words.strip(), "[EOT]") if p)})
    return rows


def placeholder_id(tokenizer) -> int:
    """Token id of the placeholder word."""
    return int(tokenizer([PLACEHOLDER])[0, 1])


def check_placeholders(ids: torch.Tensor, n_placeholders: int, token_id: int) -> None:
    """Every prompt must carry its placeholders right after the start-of-text token."""
    if n_placeholders and not bool((ids[:, 1:1 + n_placeholders] == token_id).all()):
        raise ValueError(f"the tokenizer did not keep {n_placeholders} placeholder tokens ({PLACEHOLDER!r}) "
                         f"right after the start token; learned prompts need a CLIP-style BPE tokenizer")


def token_embedding_stats(embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation of a frozen token-embedding table (CLIP space)."""
    table = embedding.detach().float()
    return table.mean(dim=0), table.std(dim=0)


SMALL_INIT_STD = 0.02  # AnomalyCLIP's prompt learner (prompt_ensemble.py: nn.init.normal_(std=0.02))


def sample_tokens(shape: tuple[int, ...], mean: torch.Tensor, std: torch.Tensor, init: str,
                  generator: torch.Generator, shift_sigmas: float = 0.0, bound: float | None = None) -> torch.Tensor:
    """Draw token vectors: ``random`` N(0, 1), ``small`` N(0, 0.02^2), ``uniform`` U(-bound, bound),
    otherwise (``clip``, ``offset``) N(mean + shift * std, std)."""
    if init == "uniform":
        if bound is None:
            raise ValueError("uniform token initialisation needs a bound")
        return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
    noise = torch.randn(shape, generator=generator)
    if init == "random":
        return noise
    if init == "small":
        return noise * SMALL_INIT_STD
    return mean + shift_sigmas * std + noise * std


class LearnedContext(nn.Module):
    """Learnable context vectors: V (normal, Eq. 2) and W (abnormal, shared by all defects, Eq. 1).

    Shapes ``(E, l, D)``: E prompt sets of l tokens in the text-embedding width D.
    """

    def __init__(self, config: DAPOConfig, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator):
        super().__init__()
        shape = (config.n_prompts, config.n_ctx, mean.numel())
        shift = config.offset_sigmas if config.init == "offset" else 0.0
        self.normal = nn.Parameter(sample_tokens(shape, mean, std, config.init, generator))
        self.abnormal = nn.Parameter(sample_tokens(shape, mean, std, config.init, generator, shift))

    @property
    def n_prompts(self) -> int:
        return self.normal.shape[0]

    def contexts(self, n_abnormal_states: int) -> torch.Tensor:
        """Context of every prompt, state-major: ``((1 + n_abnormal) * E, l, D)``."""
        abnormal = self.abnormal.unsqueeze(0).expand(n_abnormal_states, -1, -1, -1)
        return torch.cat([self.normal, abnormal.reshape(-1, *self.abnormal.shape[1:])], dim=0)


def _knowledge():
    from dapo.data import knowledge

    return knowledge


def handcrafted_state_prompts(config: DAPOConfig, vocabulary: Sequence[str], product: str | None) -> list[list[str]]:
    """Handcrafted prompts of every state (normal first): state phrases x templates.

    ``handcrafted_binary`` (CLIP-AC) gives two states whatever the vocabulary;
    ``handcrafted_defects`` (MultiADS) one per defect, with the knowledge base's state phrases
    (or ``config.defect_states``); a defect without handcrafted phrases gets the generic
    :func:`generic_defect_states`.
    """
    templates = config.templates if config.templates is not None else tuple(_knowledge().multiads_templates())
    normal = config.normal_states if config.normal_states is not None else tuple(_knowledge().normal_state_prompts())
    obj = product_phrase(product)

    def expand(states: Sequence[str]) -> list[str]:
        return [template.format(state.format(obj)) for state in states for template in templates]

    if config.text_prompts == "handcrafted_binary":
        if config.abnormal_states is None:
            raise ValueError("handcrafted_binary prompts need config.abnormal_states, e.g. ('damaged {}',)")
        return [expand(normal), expand(config.abnormal_states)]
    return [expand(normal)] + [expand(_defect_states(config, defect)) for defect in vocabulary]


def _defect_states(config: DAPOConfig, defect: str) -> Sequence[str]:
    """State phrases of one defect: explicit ``config.defect_states``, else the knowledge base."""
    if config.defect_states is not None:
        return config.defect_states.get(defect) or generic_defect_states(defect.replace("_", " "))
    try:
        return _knowledge().multiads_state_prompts(defect)
    except KeyError:
        return generic_defect_states(defect_phrase(defect))


def generic_defect_states(words: str) -> tuple[str, str]:
    """State phrases for a defect without handcrafted ones."""
    return ("{} with " + words, words + " {}")
