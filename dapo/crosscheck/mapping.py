"""Parameter mappings between our learned parameters and each release's, by name.

Ours are :meth:`dapo.methods.dapo.model.DAPO.learnable_parameters` names; a release's are the state-dict
names of its modules as its training script builds them. The mappings were read from the
releases (file:line in docs/FIDELITY.md, "checked against the release"):

DAPO (``boschresearch/defect-aware-prompt-optimization``): ``prompt_learner.learnable_normal_tokens``
(E, l, D) = ``context.normal``; ``learnable_abnormal_tokens`` (E, l, D, shared by every defect
state) = ``context.abnormal``; ``learnable_layer_tokens.{j}`` (n, D) = ``text_deep.tokens[j]``;
``visual_prompt.learnable_visual_tokens`` (depth, n, W) = ``vision_deep.tokens``;
``linear_adapter.fc.{i}.{weight,bias}`` = ``adapters.{i}.{weight,bias}``; the release's
``prompt_learner.meta_net`` is unused (no gradient) and has no counterpart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_DAPO_DIRECT = {
    "context.normal": "prompt_learner.learnable_normal_tokens",
    "context.abnormal": "prompt_learner.learnable_abnormal_tokens",
    "vision_deep.tokens": "visual_prompt.learnable_visual_tokens",
}
_DAPO_LAYER = "prompt_learner.learnable_layer_tokens.{}"
_ADAPTER = re.compile(r"adapters\.(\d+)\.(weight|bias)$")
_RELEASE_ADAPTER = re.compile(r"linear_adapter\.fc\.(\d+)\.(weight|bias)$")
_RELEASE_LAYER = re.compile(r"prompt_learner\.learnable_layer_tokens\.(\d+)$")


def dapo_to_release(ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our learned parameters under the DAPO release's names (text deep tokens split per layer)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in ours.items():
        value = value.detach().clone()
        if name in _DAPO_DIRECT:
            out[_DAPO_DIRECT[name]] = value
        elif name == "text_deep.tokens":
            for j, layer in enumerate(value):
                out[_DAPO_LAYER.format(j)] = layer.clone()
        elif match := _ADAPTER.match(name):
            out[f"linear_adapter.fc.{match[1]}.{match[2]}"] = value
        else:
            raise KeyError(f"no DAPO-release counterpart for our parameter {name!r} "
                           f"(known: {sorted(_DAPO_DIRECT)}, text_deep.tokens, adapters.<i>.weight/bias)")
    return out


def release_to_dapo(release: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`dapo_to_release` (per-layer text tokens stacked in layer order)."""
    inverse = {v: k for k, v in _DAPO_DIRECT.items()}
    out: dict[str, torch.Tensor] = {}
    layers: dict[int, torch.Tensor] = {}
    for name, value in release.items():
        if name in inverse:
            out[inverse[name]] = value
        elif match := _RELEASE_LAYER.match(name):
            layers[int(match[1])] = value
        elif match := _RELEASE_ADAPTER.match(name):
            out[f"adapters.{match[1]}.{match[2]}"] = value
        else:
            raise KeyError(f"no counterpart of ours for the DAPO release's parameter {name!r}")
    if layers:
        if sorted(layers) != list(range(len(layers))):
            raise KeyError(f"learnable_layer_tokens indices {sorted(layers)} are not 0..{len(layers) - 1}")
        out["text_deep.tokens"] = torch.stack([layers[j] for j in range(len(layers))])
    return out


_LAYER = re.compile(r"fc\.(\d+)\.(weight|bias)$")


def adapters_to_linear_layer(ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MultiADS (``model.py:8-12``, ``LinearLayer.fc.{i}``): our ``adapters.{i}.*`` are its only learned tensors."""
    out = {}
    for name, value in ours.items():
        match = _ADAPTER.match(name)
        if not match:
            raise KeyError(f"no MultiADS counterpart for our parameter {name!r} (it learns the linear layers only)")
        out[f"fc.{match[1]}.{match[2]}"] = value.detach().clone()
    return out


def linear_layer_to_adapters(release: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`adapters_to_linear_layer`."""
    out = {}
    for name, value in release.items():
        match = _LAYER.match(name)
        if not match:
            raise KeyError(f"no counterpart of ours for MultiADS's parameter {name!r}")
        out[f"adapters.{match[1]}.{match[2]}"] = value
    return out


#: AnomalyCLIP (``prompt_ensemble.py``, ``AnomalyCLIP_PromptLearner``): ``ctx_pos`` / ``ctx_neg``
#: (n_cls = 1, one state prompt, n_ctx, D) are our ``context.normal`` / ``context.abnormal``
#: (1, n_ctx, D); ``compound_prompts_text.{j}`` (t_n_ctx, D) is ``text_deep.tokens[j]``. Its
#: ``compound_prompt_projections`` are built but never used (no gradient) and have no counterpart.
_ANOMALYCLIP_CONTEXT = {"context.normal": "ctx_pos", "context.abnormal": "ctx_neg"}
_COMPOUND = re.compile(r"compound_prompts_text\.(\d+)$")


def anomalyclip_to_release(ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our learned parameters under the AnomalyCLIP prompt learner's names and shapes."""
    out: dict[str, torch.Tensor] = {}
    for name, value in ours.items():
        value = value.detach().clone()
        if name in _ANOMALYCLIP_CONTEXT:
            out[_ANOMALYCLIP_CONTEXT[name]] = value.unsqueeze(0)  # one class: "object"
        elif name == "text_deep.tokens":
            for j, layer in enumerate(value):
                out[f"compound_prompts_text.{j}"] = layer.clone()
        else:
            raise KeyError(f"no AnomalyCLIP counterpart for our parameter {name!r} "
                           f"(known: {sorted(_ANOMALYCLIP_CONTEXT)}, text_deep.tokens)")
    return out


def release_to_anomalyclip(release: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`anomalyclip_to_release` (deep tokens stacked in layer order)."""
    inverse = {v: k for k, v in _ANOMALYCLIP_CONTEXT.items()}
    out: dict[str, torch.Tensor] = {}
    layers: dict[int, torch.Tensor] = {}
    for name, value in release.items():
        if name in inverse:
            if value.shape[0] != 1:
                raise KeyError(f"{name!r} has {value.shape[0]} classes; ours learns the single 'object' class")
            out[inverse[name]] = value[0]
        elif match := _COMPOUND.match(name):
            layers[int(match[1])] = value
        else:
            raise KeyError(f"no counterpart of ours for AnomalyCLIP's parameter {name!r}")
    if layers:
        if sorted(layers) != list(range(len(layers))):
            raise KeyError(f"compound_prompts_text indices {sorted(layers)} are not 0..{len(layers) - 1}")
        out["text_deep.tokens"] = torch.stack([layers[j] for j in range(len(layers))])
    return out


# AdaCLIP (``caoyunkang/AdaCLIP``, method/adaclip.py): the static prompts are a ``ParameterList``
# of one (length, width) tensor per layer (``:50-55``); each dynamic prompt generator and the patch
# projections are ``ProjectLayer``s, a ``ModuleList`` ``head`` of linear maps (``:15``): one per
# prompt token for the generators (``:388-397``), one per tapped layer for ``patch_token_layer``
# (``:375-379``), one for ``cls_token_layer`` (``:381-385``). Ours stack the per-token maps of a
# generator into one linear map whose output is viewed as (length, width), token-major.
_ADACLIP_STATIC = {"text_static": "text_prompter.static_prompts", "vision_static": "visual_prompter.static_prompts"}
_ADACLIP_DYNAMIC = {"text_dynamic": "dynamic_text_prompt_generator", "vision_dynamic": "dynamic_visual_prompt_generator"}
_ADACLIP_PATCH = re.compile(r"patch_projections\.(\d+)\.(weight|bias)$")
_RELEASE_ADACLIP = re.compile(r"(text_prompter\.static_prompts|visual_prompter\.static_prompts|"
                              r"dynamic_text_prompt_generator\.head|dynamic_visual_prompt_generator\.head|"
                              r"patch_token_layer\.head|cls_token_layer\.head)\.(\d+)(?:\.(weight|bias))?$")


def adaclip_to_release(ours: Mapping[str, torch.Tensor], prompt_length: int) -> dict[str, torch.Tensor]:
    """Our AdaCLIP parameters under the release's names: per-layer static prompts, the dynamic
    generators split into ``prompt_length`` per-token linear maps, one head per projection."""
    out: dict[str, torch.Tensor] = {}
    for name, value in ours.items():
        value = value.detach().clone()
        module, _, kind = name.rpartition(".")
        if name in _ADACLIP_STATIC:
            for layer, tokens in enumerate(value):
                out[f"{_ADACLIP_STATIC[name]}.{layer}"] = tokens.clone()
        elif module in _ADACLIP_DYNAMIC:
            if value.shape[0] % prompt_length:
                raise KeyError(f"{name!r} has {value.shape[0]} outputs, not a multiple of prompt_length={prompt_length}")
            for token, rows in enumerate(value.chunk(prompt_length, dim=0)):
                out[f"{_ADACLIP_DYNAMIC[module]}.head.{token}.{kind}"] = rows.clone()
        elif match := _ADACLIP_PATCH.match(name):
            out[f"patch_token_layer.head.{match[1]}.{match[2]}"] = value
        elif module == "cls_projection":
            out[f"cls_token_layer.head.0.{kind}"] = value
        else:
            raise KeyError(f"no AdaCLIP release counterpart for our parameter {name!r}")
    return out


def release_to_adaclip(release: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`adaclip_to_release` (per-layer and per-token pieces stacked in order)."""
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    inverse_static = {v: k for k, v in _ADACLIP_STATIC.items()}
    inverse_dynamic = {f"{v}.head": k for k, v in _ADACLIP_DYNAMIC.items()}
    for name, value in release.items():
        match = _RELEASE_ADACLIP.match(name)
        if not match:
            raise KeyError(f"no counterpart of ours for the AdaCLIP release's parameter {name!r}")
        module, index, kind = match[1], int(match[2]), match[3]
        if module in inverse_static:
            pieces.setdefault(inverse_static[module], {})[index] = value
        elif module in inverse_dynamic:
            pieces.setdefault(f"{inverse_dynamic[module]}.{kind}", {})[index] = value
        elif module == "patch_token_layer.head":
            pieces[f"patch_projections.{index}.{kind}"] = {0: value}
        elif index != 0:
            raise KeyError(f"{name!r}: the release's cls_token_layer has a single head (method/adaclip.py:381-385)")
        else:
            pieces[f"cls_projection.{kind}"] = {0: value}
    out: dict[str, torch.Tensor] = {}
    for name, parts in pieces.items():
        if sorted(parts) != list(range(len(parts))):
            raise KeyError(f"the release's pieces of {name!r} have indices {sorted(parts)}, not 0..{len(parts) - 1}")
        ordered = [parts[i] for i in range(len(parts))]
        out[name] = torch.stack(ordered) if name in _ADACLIP_STATIC else torch.cat(ordered) if len(ordered) > 1 \
            else ordered[0].clone()
    return out
