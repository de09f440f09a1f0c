"""Only the headline checkpoints (DAPO's, MultiADS's and AnomalyCLIP's default setting) can be committed; optimizer
states, evaluation caches and sweep settings stay out of git."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dapo.util.paths import REPO_ROOT

RUN = "results/synthetic/checkpoints"
KEPT = [f"{RUN}/dapo/default/seed0/epoch_002.safetensors", f"{RUN}/multiads/default/seed1/loss_history.csv",
        f"{RUN}/dapo/default/seed0/config.json", f"{RUN}/anomalyclip/default/seed2/epoch_001.safetensors"]
IGNORED = [f"{RUN}/dapo/default/seed0/optimizer_state_epoch_002.pt",
           f"{RUN}/dapo/default/seed0/evaluations/binary-epoch_002-0123456789ab.csv",
           f"{RUN}/dapo/lam=8/seed1/epoch_002.safetensors", f"{RUN}/adaclip/default/seed0/epoch_002.safetensors",
           f"{RUN}/faprompt/default/seed1/config.json", f"{RUN}/dapo/n_ctx=4-d1e2f3/seed0/config.json",
           "results/synthetic/trained_on_synthetic_target/checkpoints/dapo/default/seed0/epoch_002.safetensors",
           "results/synthetic/cache/evaluations/DAPO-0123456789abcdef01234567/result.pkl",
           "results/synthetic/cache/evaluations/DAPO-0123456789abcdef01234567/result.pkl.key.json",
           "results/smoke/table1_multitype.csv", "data/synthetic/x.png"]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO_ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("path,ignored", [(p, False) for p in KEPT] + [(p, True) for p in IGNORED])
def test_ignored(path, ignored):
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT)
    assert result.returncode == (0 if ignored else 1), f"{path}: expected {'ignored' if ignored else 'kept'}"
