"""Deep prefix tokens in a frozen transformer: progressive (Eq. 10) or naive prefix tuning.

A :class:`DeepPrompts` holds learnable tokens ``U_1..U_Nd`` (``n_tokens`` per layer) for
``depth`` layers from ``first_layer`` (1 for DAPO; 2 for AnomalyCLIP, whose layer 1 sees its
context tokens). :func:`run_blocks` runs the frozen blocks and, before each of those layers,
rewrites the reserved token positions (a ``slice`` of the sequence):

* layer 1: ``U_1``;
* layer j > 1, progressive: ``(1 - a_j) U_j + a_j O_{j-1}`` where ``O_{j-1}`` is the previous
  layer's output at those positions and ``a_j = alpha0 * alpha_decay**(j - 2)`` (small, decaying);
* layer j > 1, naive: ``U_j`` (the previous output is discarded).

After layer N_d the positions simply carry their outputs on. Where the positions sit is the
caller's choice: right after the start-of-text token in the text encoder (so the causal mask
lets every prompt word see them and EOT pooling is unchanged) and right after the class token
in the vision encoder (excluded from the patch taps and from pooling).

Speed: plain OpenCLIP blocks run as :class:`dapo.clip.backbone.FrozenBlock` (weights held once in
the compute dtype: the autocast dtype inside an autocast region), and the reserved positions
are rewritten in place (:class:`_SlotWrite`) instead of concatenating the sequence anew at
every layer. Other block types run as their own modules, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from dapo.clip.backbone import is_causal_mask, prepared_blocks
from dapo.methods.dapo.prompts import sample_tokens
from dapo.util.precision import compute_dtype


class DeepPrompts(nn.Module):
    """Learnable per-layer tokens ``(depth, n_tokens, width)`` and their connection rule."""

    def __init__(self, n_tokens: int, width: int, depth: int, *, mode: str = "progressive", alpha0: float = 0.1,
                 alpha_decay: float = 0.9, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 init: str = "clip", generator: torch.Generator | None = None, bound: float | None = None,
                 first_layer: int = 1) -> None:
        super().__init__()
        if mode not in ("progressive", "naive"):
            raise ValueError(f"mode must be 'progressive' or 'naive', got {mode!r}")
        if n_tokens < 1 or depth < 1:
            raise ValueError(f"need n_tokens >= 1 and depth >= 1, got {n_tokens}, {depth}")
        mean = torch.zeros(width) if mean is None else mean
        std = torch.ones(width) if std is None else std
        generator = generator or torch.Generator().manual_seed(0)
        if first_layer < 1:
            raise ValueError(f"first_layer must be >= 1, got {first_layer}")
        self.tokens = nn.Parameter(sample_tokens((depth, n_tokens, width), mean, std, init, generator, bound=bound))
        self.first_layer = first_layer
        self.mode = mode
        self.alpha0 = alpha0
        self.alpha_decay = alpha_decay

    @property
    def depth(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.tokens.shape[1]

    @property
    def last_layer(self) -> int:
        return self.first_layer + self.depth - 1

    def covers(self, layer: int) -> bool:
        """Whether ``layer`` (1-based) receives tokens."""
        return self.first_layer <= layer <= self.last_layer

    def alpha(self, layer: int) -> float:
        """Carry-over weight at a 1-based layer (0 at the first covered layer and in naive mode)."""
        if layer <= self.first_layer or self.mode == "naive":
            return 0.0
        return self.alpha0 * self.alpha_decay ** (layer - 2)

    def layer_input(self, layer: int, previous: torch.Tensor) -> torch.Tensor:
        """Tokens fed to the reserved positions of ``layer`` given their current content (B, n, D)."""
        tokens = self.tokens[layer - self.first_layer].to(previous.dtype).unsqueeze(0).expand(previous.shape[0], -1, -1)
        a = self.alpha(layer)
        return tokens if a == 0.0 else (1.0 - a) * tokens + a * previous


_FUSED = [True]


def fused_blocks() -> bool:
    """Whether :func:`run_blocks` takes the fused path now (``False`` inside :func:`reference_blocks`)."""
    return _FUSED[-1]


@contextlib.contextmanager
def reference_blocks():
    """Inside: :func:`run_blocks` runs the block modules with slicing and concatenation, the
    implementation before :class:`dapo.clip.backbone.FrozenBlock` (for tests and benchmarks)."""
    _FUSED.append(False)
    try:
        yield
    finally:
        _FUSED.pop()


class _SlotWrite(torch.autograd.Function):
    """``x[:, start:stop] = (1 - a) * tokens + a * x[:, start:stop]``, in place or on a copy.

    Backward: ``a`` times the incoming gradient at the slot (zero when ``a`` is 0) and the
    gradient unchanged elsewhere for ``x``; the batch sum of ``(1 - a)`` times it at the slot
    for ``tokens`` (accumulated in float32). One pass over the sequence each way, where
    slicing and concatenation cost a zero-filled copy per slice.
    """

    @staticmethod
    def forward(ctx, x, tokens, a: float, start: int, stop: int, inplace: bool):
        out = x if inplace else x.clone()
        segment = out[:, start:stop]
        expanded = tokens.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        segment.copy_(expanded if a == 0.0 else (1.0 - a) * expanded + a * segment)
        if inplace:
            ctx.mark_dirty(x)
        ctx.a, ctx.start, ctx.stop, ctx.token_dtype = a, start, stop, tokens.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        a, start, stop = ctx.a, ctx.start, ctx.stop
        grad_x = grad_tokens = None
        if ctx.needs_input_grad[0]:
            grad_x = grad.clone()
            grad_x[:, start:stop].mul_(a)
        if ctx.needs_input_grad[1]:
            grad_tokens = grad[:, start:stop].float().sum(0)
            grad_tokens = (grad_tokens if a == 0.0 else (1.0 - a) * grad_tokens).to(ctx.token_dtype)
        return grad_x, grad_tokens, None, None, None, None


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, *, attn_mask: torch.Tensor | None = None,
               deep: DeepPrompts | None = None, slot: slice | None = None, taps: Iterable[int] = (),
               fused: bool | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run transformer blocks (batch first) with deep tokens at ``slot``; return output and tapped layers.

    ``taps`` are 1-based layer numbers whose outputs are returned in a dict; ``attn_mask`` is
    the blocks' additive mask (OpenCLIP's causal text mask runs as ``is_causal``).
    ``fused=False`` runs the block modules themselves with slicing and concatenation (the
    reference the fused path is tested against); ``None`` follows :func:`reference_blocks`.
    Inside an autocast region the fused path runs in the autocast dtype, with the frozen
    weights held in it, and returns tensors in it.
    """
    taps = set(taps)
    tapped: dict[int, torch.Tensor] = {}
    if deep is not None and (slot is None or slot.stop - slot.start != deep.n_tokens):
        raise ValueError(f"slot {slot} must span the {deep.n_tokens} deep tokens")
    fused = _FUSED[-1] if fused is None else fused
    dtype = compute_dtype(x)
    prepared = prepared_blocks(blocks, dtype) if fused and isinstance(blocks, nn.ModuleList) else None
    if prepared is None:
        for layer, block in enumerate(blocks, start=1):
            if deep is not None and deep.covers(layer):
                new = deep.layer_input(layer, x[:, slot])
                x = torch.cat([x[:, :slot.start], new, x[:, slot.stop:]], dim=1)
            x = block(x, attn_mask=attn_mask)
            if layer in taps:
                tapped[layer] = x
        return x, tapped
    causal = is_causal_mask(attn_mask)
    mask = None if causal or attn_mask is None else attn_mask.to(dtype)  # as OpenCLIP's block casts it
    device_type = x.device.type
    no_autocast = torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) \
        else contextlib.nullcontext()
    with no_autocast:
        x = x.to(dtype)
        for layer, block in enumerate(prepared, start=1):
            if deep is not None and deep.covers(layer):
                # in place on a block output no one else holds: not the caller's input, not a tap
                inplace = layer > 1 and (layer - 1) not in taps
                x = _SlotWrite.apply(x, deep.tokens[layer - deep.first_layer], deep.alpha(layer), slot.start, slot.stop, inplace)
            x = block(x, mask, causal)
            if layer in taps:
                tapped[layer] = x
    return x, tapped
