"""Loading never runs code (issue 31): a crafted pickle in any file the project reads back is refused
with a message naming the file, and the code it carries never runs (its marker file never appears)."""

from __future__ import annotations

import builtins
import warnings
from pathlib import Path

import pytest
import test_cli
import torch
from torch.utils.data import default_collate

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO
from dapo.util.loading import UnsafeFileError, load_state

trained = test_cli.trained  # the CLI tests' tiny trained run and its checkpoint, for the command-line case
checkpoint = test_cli.checkpoint


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the loader ran the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.fixture
def crafted(tmp_path):
    """``write(path)`` saves a torch file whose unpickling would create ``marker``; returns the marker."""
    marker = tmp_path / "CODE_RAN"

    def write(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}, path)
        return path

    yield write, marker
    assert not marker.exists(), "loading a file ran the code it carried"


def test_the_crafted_file_would_run_code_if_unpickled(tmp_path, crafted):
    write, marker = crafted
    path = write(tmp_path / "x.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(path, weights_only=False)  # what the old pretraining resume did
    assert marker.exists()
    marker.unlink()  # the fixture checks the other tests' loaders
    with pytest.raises(UnsafeFileError, match=f"pretraining state {path} holds more than tensors"):
        load_state(path, "pretraining state")


def test_pretraining_resume_refuses_a_crafted_state(tmp_path, crafted):
    from dapo.synthetic.pretrain import pretrain
    from dapo.synthetic.pretrain_config import PretrainConfig

    write, _ = crafted
    state = write(tmp_path / "run" / "state.pt")
    config = PretrainConfig(image_steps=1, text_steps=1, full_per_step=2, local_images_per_step=1, warmup_steps=1,
                            text_images=8, text_batch=4, checkpoint_every=1, threads=1, precision="fp32")
    with pytest.raises(UnsafeFileError, match=rf"pretraining state {state} holds more than tensors .*resume=False"):
        pretrain(config, tmp_path / "run", output=tmp_path / "run" / "w.safetensors")


def test_training_resume_refuses_a_crafted_optimiser_state(tiny_backbone, tiny_dataset, tmp_path, crafted):
    from dapo.engine.train import train

    write, _ = crafted
    kwargs = dict(batch_size=4, progress=False, collate_fn=default_collate)
    train(DAPO(tiny_backbone, DAPOConfig(n_prompts=2)), tiny_dataset, tmp_path, epochs=1, **kwargs)
    write(tmp_path / "optimizer_state_epoch_001.pt")
    with pytest.raises(Exception) as error:  # torch's restricted unpickler refuses it
        train(DAPO(tiny_backbone, DAPOConfig(n_prompts=2)), tiny_dataset, tmp_path, epochs=2, **kwargs)
    assert "Weights only load failed" in str(error.value) or "optimizer_state_epoch_001.pt" in str(error.value)


def test_training_resume_names_the_crafted_optimiser_state(tiny_backbone, tiny_dataset, tmp_path, crafted):
    from dapo.engine.train import train

    write, _ = crafted
    kwargs = dict(batch_size=4, progress=False, collate_fn=default_collate)
    train(DAPO(tiny_backbone, DAPOConfig(n_prompts=2)), tiny_dataset, tmp_path, epochs=1, **kwargs)
    write(tmp_path / "optimizer_state_epoch_001.pt")
    with pytest.raises(Exception, match="optimizer_state_epoch_001.pt"):
        train(DAPO(tiny_backbone, DAPOConfig(n_prompts=2)), tiny_dataset, tmp_path, epochs=2, **kwargs)


def test_checkpoints_are_safetensors_and_a_pickle_in_their_place_is_refused(tiny_backbone, tmp_path, crafted):
    from dapo.engine.checkpoint import CheckpointError, load_trained, read_checkpoint

    write, _ = crafted
    path = write(tmp_path / "epoch_001.safetensors")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        load_trained(path, tiny_backbone)


def test_clip_weights_passed_as_a_file_are_read_as_data(tiny_model_name, tmp_path, crafted):
    from dapo.clip.backbone import load_backbone

    write, _ = crafted
    path = write(tmp_path / "ViT-evil.pt")
    with pytest.raises(UnsafeFileError, match=f"backbone weights {path} hold more than tensors"):
        load_backbone(tiny_model_name, None, image_size=32, checkpoint=path)
    with pytest.raises(UnsafeFileError, match=f"backbone weights {path} hold more than tensors"):
        load_backbone(tiny_model_name, str(path), image_size=32)  # pretrained=<file>, as -p pretrained does


def test_torchscript_weights_are_refused_not_executed(tiny_model_name, tmp_path):
    from dapo.clip.backbone import load_backbone

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeFileError, match=f"backbone weights {path} are a TorchScript archive"):
        load_backbone(tiny_model_name, None, image_size=32, checkpoint=path)
    with pytest.raises(UnsafeFileError, match="is a TorchScript archive"):
        load_state(path, "state")


def test_a_plain_state_dict_still_loads(tiny_model_name, tiny_backbone, tmp_path):
    from dapo.clip.backbone import load_backbone

    path = tmp_path / "plain.pt"
    torch.save(tiny_backbone.clip.state_dict(), path)
    loaded = load_backbone(tiny_model_name, None, image_size=32, checkpoint=path)
    key = "visual.conv1.weight"
    assert torch.equal(loaded.clip.state_dict()[key], tiny_backbone.clip.state_dict()[key])


def test_the_command_line_refuses_crafted_clip_weights_in_one_line(capsys, tmp_path, crafted, request):
    from test_cli import dapo, error_line, images_folder

    checkpoint = request.getfixturevalue("checkpoint")

    write, _ = crafted
    weights = write(tmp_path / "ViT-L-14-336.pt")
    images_folder(tmp_path / "photos")
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", checkpoint,
                     "--clip-weights", weights, "--out", tmp_path / "out", "--no-progress")
    assert code == 2 and f"backbone weights {weights} hold more than tensors" in error_line(err)
    assert not (tmp_path / "out" / "predictions.csv").exists()

