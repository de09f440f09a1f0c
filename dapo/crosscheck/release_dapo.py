"""Release side of the DAPO cross-check: run in its own process, never imported into ``dapo``.

``python release_dapo.py INPUT OUTPUT`` with ``PYTHONPATH=<release checkout>:<stub dir>``. This
is our own code: it imports the release's classes by name (``train.create_model_components``,
``train.Trainer``, ``test.Tester``) from the checkout, builds them as the release's scripts do
(from an argparse-like namespace, on the compact backbone registered as an OpenCLIP config),
loads the fixed learned parameters by the release's names, and records what the release's own
code computes (wrappers around its functions, a hook on its adapter). Only the standard library
and torch are used besides the release's modules; the project's ``dapo`` is not importable here.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # our folder must not shadow the release's modules (train, test, loss, ...)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class Recorder:
    """Wrap a callable; keep every result (detached clones) in ``calls``."""

    def __init__(self, fn, keep_inputs: bool = False):
        self.fn, self.calls, self.inputs, self.keep_inputs = fn, [], [], keep_inputs

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.calls.append(_detach(out))
        if self.keep_inputs:
            self.inputs.append(_detach(args))
        return out


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    return value


class FunctionalProxy:
    """Stands in for ``torch.nn.functional`` in the release's ``train`` module, recording the
    logits given to ``cross_entropy`` (the global logits of ``train.py:240,256``)."""

    def __init__(self):
        self.ce_inputs = []

    def cross_entropy(self, logits, target, *args, **kwargs):
        self.ce_inputs.append(logits.detach().clone())
        return F.cross_entropy(logits, target, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(F, name)


def fit_context(prompt_learner, length: int) -> None:
    """Cut the prompt learner's 77-token buffers (``learnable_prompt.py:83`` hard-codes 77) to the
    text tower's ``length``: only padding after the end-of-text token is removed."""
    n, a = prompt_learner.normal_token_count, prompt_learner.abnormal_token_count
    for name in ("normal_template_token", "abnormal_template_token"):
        ids = getattr(prompt_learner, name)
        if int(ids.argmax(dim=-1).max()) >= length:
            raise SystemExit(f"a release prompt does not fit {length} tokens: {name}")
        setattr(prompt_learner, name, ids[..., :length])
    prompt_learner.normal_suffix_token = prompt_learner.normal_suffix_token[:, : length - 1 - n]
    prompt_learner.abnormal_suffix_token = prompt_learner.abnormal_suffix_token[:, :, : length - 1 - a]


def load_parameters(modules: dict, parameters: dict) -> None:
    """Copy ``<module>.<param>`` tensors into the release's modules; every name must exist."""
    for full, value in parameters.items():
        module_name, _, name = full.partition(".")
        params = dict(modules[module_name].named_parameters())
        if name not in params:
            raise SystemExit(f"the release's {module_name} has no parameter {name!r} (has {sorted(params)})")
        if params[name].shape != value.shape:
            raise SystemExit(f"{full}: release shape {tuple(params[name].shape)} vs ours {tuple(value.shape)}")
        with torch.no_grad():
            params[name].copy_(value)


def named(modules: dict, what: str) -> dict:
    """``<module>.<param>`` -> gradient or value of every parameter that has one."""
    out = {}
    for module_name, module in modules.items():
        for name, p in module.named_parameters():
            value = p.grad if what == "grad" else p
            if value is not None and not name.startswith("meta_net"):
                out[f"{module_name}.{name}"] = value.detach().clone()
    return out


def main(inp: str, outp: str) -> None:
    spec = torch.load(inp, weights_only=False)
    torch.manual_seed(0)
    import open_clip
    import test as release_test
    import train as release_train

    open_clip.add_model_config(spec["model_config"])
    long_tokenizer = open_clip.get_tokenizer(spec["model_name"], context_length=77)
    open_clip.get_tokenizer = lambda *a, **k: long_tokenizer  # 77 tokens: learnable_prompt.py:83 (this process only)
    args = SimpleNamespace(
        model_name=spec["model_name"], pretrained=spec["weights"], image_size=spec["image_size"], dataset="mvtec",
        model_configs=os.path.dirname(spec["model_config"]), depth=spec["vision_depth"],
        prefix_token_cnt=spec["vision_tokens"], feature_layers=list(spec["feature_layers"]),
        text_depth=spec["text_depth"], normal_token_cnt=spec["n_ctx"], abnormal_token_cnt=spec["n_ctx"],
        prompt_count=spec["prompt_count"], layer_token_cnt=spec["layer_tokens"], epoch=spec["steps"],
        learning_rate=spec["lr"], batch_size=spec["images"].shape[0], defect_types=None)
    length = spec["context_length"]
    out: dict = {"meta/release_open_clip": open_clip.__file__}
    images = spec["images"]

    # ---------------------------------------------------------------- inference: test.Tester.forward_pass
    components = release_train.create_model_components(args)
    model = components["model"].float().eval()
    tester = release_test.Tester(args)
    tester.model_components = {"model": model, "tokenizer": long_tokenizer}
    tester.learnable_components = tester.setup_learnable_components()
    learn = tester.learnable_components
    fit_context(learn["prompt_learner"], length)
    modules = {"prompt_learner": learn["prompt_learner"], "visual_prompt": learn["visual_prompt"],
               "linear_adapter": learn["trainable_adapter"]}
    load_parameters(modules, spec["parameters"])
    for module in modules.values():
        module.eval()
    encode_image = model.encode_image = Recorder(model.encode_image)
    encode_text = model.encode_learn_prompts = Recorder(model.encode_learn_prompts)
    similarity = release_test.compute_similarity = Recorder(release_test.compute_similarity)
    similarity_map = release_test.compute_similarity_map = Recorder(release_test.compute_similarity_map)
    adapted = []
    learn["trainable_adapter"].register_forward_hook(lambda m, i, o: adapted.append(_detach(o)))
    with torch.no_grad():
        local_map, score = tester.forward_pass(images)
    out["words/forward"] = list(tester.dataset_configs["mvtec"]["prompt_states"])
    pl = learn["prompt_learner"]
    out["tokens/forward"] = torch.cat([pl.normal_template_token, pl.abnormal_template_token]).reshape(-1, length)
    out["image/embedding"] = F.normalize(encode_image.calls[0][0], dim=-1)
    side = images.shape[-1] // model.visual.patch_size[0]
    for i, patch in enumerate(adapted[0]):
        out[f"patch/tap{i + 1}"] = F.normalize(patch, dim=-1)
    out["text/state_embeddings"] = F.normalize(encode_text.calls[0][0], dim=-1)
    multi = similarity.calls[0::2]  # test.py:335-336: multi-class, then binary, per stage
    for i, logits in enumerate(multi):
        out[f"stage{i + 1}/logits"] = logits.permute(0, 2, 1).reshape(logits.shape[0], -1, side, side)
    for i, maps in enumerate(similarity_map.calls):
        out[f"stage{i + 1}/probs"] = maps.permute(0, 3, 1, 2)
    out["map/anomaly_sum_over_stages"] = local_map.detach()
    out["score/image"] = score.detach()

    # ---------------------------------------------------------------- training: train.Trainer.train_epoch
    components = release_train.create_model_components(args)
    fit_context(components["prompt_learner"], length)
    trainer_modules = {"prompt_learner": components["prompt_learner"], "visual_prompt": components["visual_prompt"],
                       "linear_adapter": components["trainable_adapter"]}
    load_parameters(trainer_modules, spec["parameters"])
    out["words/train"] = list(components["prompt_learner"].prompt_state)
    pl = components["prompt_learner"]
    out["tokens/train"] = torch.cat([pl.normal_template_token, pl.abnormal_template_token]).reshape(-1, length)
    losses = {"focal_loss": Recorder(release_train.FocalLoss()), "dice_loss": Recorder(release_train.BinaryDiceLoss())}
    import tempfile

    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = release_train.Trainer(args, components, {"train_loader": []}, losses, checkpoints)
    gt_defect = trainer.gt_defect
    defect_types = []
    for k in spec["type_ids"].tolist():
        names = [name for name, idx in gt_defect.items() if idx == k]
        defect_types.append(names[0] if names else "good")
    out["meta/defect_types"] = defect_types
    batch = {"img": images, "anomaly": spec["labels"], "defect_type": defect_types, "mask": spec["masks"]}
    trainer.train_loader = [batch]
    proxy = release_train.F = FunctionalProxy()
    backbone = components["model"]
    for step in range(spec["steps"]):
        n_focal = len(losses["focal_loss"].calls)
        local, ce = trainer.train_epoch()  # one batch: one Adam step (train.py:278-280)
        out[f"loss/step{step}/ce"] = torch.tensor(ce, dtype=torch.float64)
        out[f"loss/step{step}/local_weighted"] = torch.tensor(local, dtype=torch.float64)
        out[f"loss/step{step}/total"] = torch.tensor(local + ce, dtype=torch.float64)
        if step == 0:
            out["train/global_logits"] = proxy.ce_inputs[0]
            dice = losses["dice_loss"].calls
            for i, focal in enumerate(losses["focal_loss"].calls[n_focal:]):
                out[f"loss/step0/stage{i + 1}/focal"] = focal
                out[f"loss/step0/stage{i + 1}/dice_normal"] = dice[2 * i]
                out[f"loss/step0/stage{i + 1}/dice_abnormal"] = dice[2 * i + 1]
            out["grad_release"] = named(trainer_modules, "grad")
            out["fact/backbone_requires_grad"] = all(p.requires_grad for p in backbone.parameters())
            out["fact/backbone_has_grad"] = any(p.grad is not None for p in backbone.parameters())
            out["fact/backbone_in_optimizer"] = any(
                p is q for group in trainer.optimizer.param_groups for p in group["params"] for q in backbone.parameters())
    out["weights_release"] = named(trainer_modules, "value")
    torch.save(out, outp)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python release_dapo.py INPUT.pt OUTPUT.pt")
    main(sys.argv[1], sys.argv[2])
