"""MultiADS's mosaic augmentation and the official DAPO training words."""

import pytest
import torch

from dapo.data.augment import MosaicDataset, mosaic
from dapo.data.training_words import official_training_words


def _sample(value: float, defect: int, product: str = "widget", size: int = 8) -> dict:
    types = torch.zeros(size, size, dtype=torch.long)
    if defect:
        types[:, :] = defect
    return {"image": torch.full((3, size, size), value), "type_mask": types, "mask": (types > 0).float(),
            "label": int(defect > 0), "product": product, "defects": ("hole",) if defect else (), "path": f"{value}"}


def test_mosaic_tiles_four_samples_row_major_at_half_size():
    tiles = [_sample(1.0, 0), _sample(2.0, 1), _sample(3.0, 0), _sample(4.0, 2)]
    out = mosaic(tiles, tiles[0])
    assert out["image"].shape == (3, 8, 8) and out["type_mask"].shape == (8, 8)
    assert torch.allclose(out["image"][:, :4, :4], torch.tensor(1.0)) and torch.allclose(out["image"][:, 4:, 4:],
                                                                                          torch.tensor(4.0))
    assert (out["type_mask"][:4, 4:] == 1).all() and (out["type_mask"][4:, 4:] == 2).all()
    assert (out["type_mask"][:4, :4] == 0).all() and torch.equal(out["mask"], (out["type_mask"] > 0).float())
    assert out["label"] == 1 and out["defects"] == ("hole",)


class _Records:
    """A dataset stub with records (product, native label) and constant-valued images."""

    def __init__(self, n: int = 12):
        from dapo.data.base import Record

        self.records = [Record(f"{i}.png", "widget", ("hole",) if i % 2 else (), None) for i in range(n)]
        self.vocab_scope, self.dataset_vocabulary = "dataset", ("hole",)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return _sample(float(index), index % 2)


def test_mosaic_dataset_is_seeded_by_seed_epoch_and_index_and_passes_attributes_through():
    data = _Records()
    always = MosaicDataset(data, 1.0, seed=3)
    assert always.dataset_vocabulary == ("hole",) and len(always) == len(data)
    first = always[5]["image"].clone()
    assert torch.equal(MosaicDataset(data, 1.0, seed=3)[5]["image"], first)
    always.set_epoch(2)
    assert any(not torch.equal(always[i]["image"], MosaicDataset(data, 1.0, seed=3)[i]["image"]) for i in range(12))
    never = MosaicDataset(data, 0.0)
    assert torch.equal(never[5]["image"], data[5]["image"])
    rate = MosaicDataset(_Records(200), 0.2, seed=0)
    hits = sum(rate[i]["path"].startswith("mosaic:") for i in range(200))
    assert 20 <= hits <= 60  # binomial(200, 0.2): mean 40, sd 5.7
    with pytest.raises(ValueError, match="mosaic probability"):
        MosaicDataset(data, 1.5)


def test_official_training_words_rename_mvtec_types_only():
    assert official_training_words("mvtec", ("color", "combined", "poke", "scratch")) == (
        "discoloration", "compound", "puncture", "scratch")
    assert official_training_words("synthetic_source", ("color", "poke")) == ("color", "poke")
