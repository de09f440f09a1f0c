"""Shared model fixtures: a tiny randomly initialised OpenCLIP ViT (no downloads, CPU-fast)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from torch.utils.data import Dataset

TINY_MODEL = "dapo-test-tiny"
TINY_IMAGE = 32  # 4 x 4 patches of 8 px
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": TINY_IMAGE, "layers": 4, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 4},
}
# Handcrafted prompt lists for baseline tests (independent of the knowledge base).
TEST_PROMPTS = {
    "templates": ("a photo of a {}.", "a close-up photo of the {}."),
    "normal_states": ("flawless {}", "{}"),
    "defect_states": {"scratch": ("{} with a scratch",), "hole": ("{} with a hole", "punctured {}")},
}


def pytest_configure(config):
    """The ``crosscheck`` marker: tests that run an authors' release (tests/test_crosscheck_releases.py)."""
    config.addinivalue_line("markers", "crosscheck: runs an authors' release checkout named by DAPO_RELEASE_<NAME> "
                                       "(skipped when the variable is unset)")


@pytest.fixture(autouse=True)
def _machine_precision():
    """A run fixes what precision "auto" means for the process (start_run); each test starts
    and ends with the machine's choice."""
    from dapo.util.precision import set_run_precision

    set_run_precision(None)
    yield
    set_run_precision(None)


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    """The tiny OpenCLIP model config (a fresh copy)."""
    return json.loads(json.dumps(TINY_CONFIG))


@pytest.fixture(scope="session")
def tiny_image_size() -> int:
    return TINY_IMAGE


@pytest.fixture(scope="module")
def smoke_target_world(tmp_path_factory, tiny_image_size):
    """``(profile config, name)`` of the synthetic profile's first target world, written at smoke size
    into a fresh data root (the config at the tiny image size, one epoch)."""
    from dapo.experiments.profiles import resolve_profile
    from dapo.synthetic.worlds import write_world

    root = tmp_path_factory.mktemp("worlds")
    cfg = resolve_profile("synthetic", smoke=True, data_root=root, image_size=tiny_image_size, epochs=1)
    name = cfg.target_datasets[0]
    write_world(name, cfg.dataset_roots[name], smoke=True, image_size=64)
    return cfg, name


@pytest.fixture(scope="module")
def smoke_target(smoke_target_world):
    """The test split of :func:`smoke_target_world`, opened as the notebooks open it."""
    from dapo.experiments.runs import open_profile_dataset

    cfg, name = smoke_target_world
    return open_profile_dataset(cfg, name, split="test")


@pytest.fixture(scope="module")
def tiny_dapo(tiny_backbone):
    """An untrained two-prompt DAPO on the tiny backbone (evaluation tests need no training)."""
    from dapo.methods import make_model

    return make_model("dapo", tiny_backbone, n_prompts=2)


@pytest.fixture
def test_prompts() -> dict:
    """Explicit handcrafted prompt lists (DAPOConfig overrides) for baseline tests."""
    return dict(TEST_PROMPTS)


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory) -> str:
    """Register the tiny OpenCLIP config once per session."""
    path = tmp_path_factory.mktemp("openclip_configs") / f"{TINY_MODEL}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return TINY_MODEL


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_name):
    """Frozen tiny backbone at its native 32 px (shared: nothing may modify it)."""
    from dapo.clip.backbone import load_backbone

    torch.manual_seed(0)
    return load_backbone(tiny_model_name, None, image_size=TINY_IMAGE)


class TinyDefectDataset(Dataset):
    """In-memory samples of the sample contract: random images, square defects of two types."""

    dataset_vocabulary = ("hole", "scratch")
    vocab_scope = "dataset"

    def __init__(self, n: int = 6, size: int = TINY_IMAGE, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=generator)
        self.type_masks = torch.zeros(n, size, size, dtype=torch.int64)
        for i in range(n):
            defect = i % 3  # 0 normal, 1 hole, 2 scratch
            if defect:
                top, left = (int(v) for v in torch.randint(0, size // 2, (2,), generator=generator))
                self.type_masks[i, top:top + size // 4, left:left + size // 4] = defect

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        type_mask = self.type_masks[index]
        return {"image": self.images[index], "mask": (type_mask > 0).float(), "type_mask": type_mask,
                "label": int(type_mask.max() > 0), "product": "widget", "path": f"memory/{index}.png"}


@pytest.fixture
def tiny_dataset() -> TinyDefectDataset:
    return TinyDefectDataset()


@pytest.fixture
def make_tiny_dataset():
    """The in-memory dataset class, to build variants (``make_tiny_dataset(n=4, seed=1)``)."""
    return TinyDefectDataset


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE, generator=torch.Generator().manual_seed(1))


#: ViT-L-14-336's widths (vision 1024, text 768, joint 768) with 4 layers per tower: trainable parameters
#: that depend only on the widths, the 4 taps and a prompt depth <= 4 are pinned fast on it.
SHALLOW_VIT_L = {"embed_dim": 768, "vision_cfg": {"image_size": 336, "layers": 4, "width": 1024, "patch_size": 14},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 4}}


@pytest.fixture(scope="session")
def shallow_vit_l(tmp_path_factory):
    """A randomly initialised 4-layer tower of ViT-L-14-336's widths at 336 px (shared: nothing may modify it)."""
    from dapo.clip.backbone import load_backbone

    path = tmp_path_factory.mktemp("openclip_configs") / "dapo-test-shallow-vit-l.json"
    path.write_text(json.dumps(SHALLOW_VIT_L))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    return load_backbone("dapo-test-shallow-vit-l", None, image_size=336)


@pytest.fixture(scope="module")
def paper_backbone():
    """The paper configuration with random weights: ViT-L-14-336 at 518 px."""
    from dapo.clip.backbone import load_backbone

    torch.manual_seed(0)
    return load_backbone("ViT-L-14-336", None, image_size=518)
