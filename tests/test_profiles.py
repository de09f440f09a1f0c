"""Profiles: the paper profile refuses to start without data or weights, naming what to provide."""

import pytest

from dapo.experiments.profiles import PAPER_DATASETS, ProfileError, resolve_profile


def test_paper_profile_without_data_or_weights_lists_everything_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ProfileError) as err:
        resolve_profile("paper", data_root=tmp_path)
    message = str(err.value)
    for name in PAPER_DATASETS:
        assert f"dataset {name!r}" in message
    assert "ViT-L-14-336/openai" in message and "Using the real datasets" in message


def test_paper_profile_accepts_per_dataset_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ProfileError) as err:
        resolve_profile("paper", data_root=tmp_path, dataset_roots={"visa": tmp_path / "elsewhere"})
    assert "dataset 'visa'" not in str(err.value) and "dataset 'mpdd'" in str(err.value)


def test_paper_profile_tests_on_the_other_benchmarks_when_named(tmp_path, monkeypatch):
    """BTAD, KSDD, DAGM, DTD-Synthetic are no default targets; named, each is looked for in its folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    extra = ("btad", "ksdd", "dagm", "dtd_synthetic")
    assert not set(extra) & set(PAPER_DATASETS)
    (tmp_path / "ksdd").mkdir()
    with pytest.raises(ProfileError) as err:
        resolve_profile("paper", data_root=tmp_path, target_datasets=["visa", *extra])
    message = str(err.value)
    for name in ("btad", "dagm", "dtd_synthetic"):
        assert f"dataset {name!r}: no folder at {tmp_path / name}" in message, message
    assert "dataset 'ksdd'" not in message and "dataset 'mpdd'" not in message


def test_synthetic_profile_defaults_and_overrides(tmp_path):
    cfg = resolve_profile("synthetic", data_root=tmp_path, smoke=True, epochs=3)
    assert cfg.backbone == "dapo-compact" and cfg.pretrained == "synthetic"
    assert cfg.train_dataset not in cfg.target_datasets and len(cfg.target_datasets) >= 2
    assert all(str(root).startswith(str(tmp_path)) for root in cfg.dataset_roots.values())
    assert cfg.epochs == 3 and cfg.smoke


def test_unknown_profile_is_named():
    with pytest.raises(ProfileError, match="'papper'"):
        resolve_profile("papper")


def test_paper_profile_with_a_missing_local_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ProfileError, match="checkpoint file not found: .*nowhere.pt"):
        resolve_profile("paper", data_root=tmp_path, checkpoint=tmp_path / "nowhere.pt")
