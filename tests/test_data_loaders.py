"""Every loader on a tiny tree written in its official layout: sample contract, defect
mapping, per-pixel type masks, vocabularies, multi-defect handling, DataLoader workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from official_trees import HEIGHT, REGIONS, SIZE, SMALL_REGIONS, TREES, WIDTH, _colour, _images, write_official_trees
from PIL import Image

from dapo.data import (
    CLIP_MEAN,
    CLIP_STD,
    LayoutImage,
    collate_samples,
    load_knowledge,
    open_dataset,
    seen_unseen,
    write_tree,
)
from dapo.data.knowledge import product_key


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    return write_official_trees(tmp_path_factory.mktemp("trees"))


def _spec_by_stem(name: str) -> dict[str, LayoutImage]:
    return {item.name: item for item in _images(TREES[name])}


def _expected_types(item: LayoutImage, vocabulary: tuple[str, ...], knowledge, combined: bool) -> np.ndarray:
    expected = np.zeros((SIZE, SIZE), np.int64)
    for position, label in enumerate(item.defects):
        superclass = "combined" if combined else knowledge.superclass(label)
        expected[SMALL_REGIONS[position]] = vocabulary.index(superclass) + 1
    return expected


@pytest.mark.parametrize("name", list(TREES))
def test_sample_contract(roots, name):
    dataset = open_dataset(name, roots[name], image_size=SIZE)
    items = _spec_by_stem(name)
    assert len(dataset) == sum(1 + len(a) for a in TREES[name].values())
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    for index in range(len(dataset)):
        sample = dataset[index]
        item = items[Path(sample["path"]).stem]
        assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
        assert sample["mask"].shape == (SIZE, SIZE) and sample["mask"].dtype == torch.float32
        assert sample["type_mask"].shape == (SIZE, SIZE) and sample["type_mask"].dtype == torch.int64
        assert torch.equal(sample["mask"], (sample["type_mask"] > 0).float())
        assert sample["label"] == int(bool(item.defects)) == int(sample["mask"].any())
        assert Path(sample["path"]).is_file()
        # a constant image stays constant through the bicubic resize; JPEG layouts may shift it by 1
        expected = (torch.full((3, 1, 1), _colour(int(item.name[1:])) / 255.0) - mean) / std
        tolerance = 1.5 / 255 / min(CLIP_STD) if name in ("visa", "real_iad") else 1e-5
        assert torch.allclose(sample["image"], expected.expand(3, SIZE, SIZE), atol=tolerance)


@pytest.mark.parametrize("name", list(TREES))
def test_defect_mapping_and_per_pixel_types(roots, name):
    dataset = open_dataset(name, roots[name], image_size=SIZE)
    knowledge, items = load_knowledge(name), _spec_by_stem(name)
    for index in range(len(dataset)):
        sample = dataset[index]
        item = items[Path(sample["path"]).stem]
        combined = len(item.defects) > 1 and name not in ("visa",)
        wanted = ("combined",) if combined else tuple(sorted({knowledge.superclass(d) for d in item.defects}))
        assert sample["defects"] == wanted
        assert sample["product"] == product_key(item.product)
        vocabulary = dataset.vocabulary(sample["product"])
        assert np.array_equal(sample["type_mask"].numpy(), _expected_types(item, vocabulary, knowledge, combined))


def test_visa_multi_defect_images_keep_one_type_per_pixel(roots):
    dataset = open_dataset("visa", roots["visa"], image_size=SIZE, products=["candle"])
    multi = [i for i in range(len(dataset)) if dataset.is_multi_defect(i)]
    assert len(multi) == 1
    sample = dataset[multi[0]]
    vocabulary = dataset.vocabulary("candle")
    assert sample["defects"] == ("missing", "spot")
    assert set(np.unique(sample["type_mask"][:6].numpy())) == {vocabulary.index("spot") + 1}
    assert set(np.unique(sample["type_mask"][6:, 6:].numpy())) == {vocabulary.index("missing") + 1}


@pytest.mark.parametrize("name", list(TREES))
def test_vocabularies_are_the_knowledge_base_lists(roots, name):
    dataset = open_dataset(name, roots[name], image_size=SIZE)
    knowledge = load_knowledge(name)
    for product in dataset.products:
        if product in knowledge.product_labels:
            assert dataset.vocabulary(product) == knowledge.product_defects(product)
    assert dataset.dataset_vocabulary == tuple(sorted({d for p in dataset.products for d in dataset.vocabulary(p)}))


def test_a_product_missing_from_the_knowledge_base_takes_its_defects_from_disk(roots):
    dataset = open_dataset("mad_real", roots["mad_real"], image_size=SIZE)
    assert dataset.products == ("bear", "pig")
    assert dataset.vocabulary("pig") == ("missing",)


def test_dataset_scope_indexes_the_dataset_vocabulary(roots):
    dataset = open_dataset("mvtec", roots["mvtec"], image_size=SIZE, vocab_scope="dataset")
    items = _spec_by_stem("mvtec")
    knowledge = load_knowledge("mvtec")
    assert dataset.dataset_vocabulary == tuple(
        sorted(set(knowledge.product_defects("cable")) | set(knowledge.product_defects("bottle")))
    )
    for index in range(len(dataset)):
        sample = dataset[index]
        item = items[Path(sample["path"]).stem]
        combined = len(item.defects) > 1
        expected = _expected_types(item, dataset.dataset_vocabulary, knowledge, combined)
        assert np.array_equal(sample["type_mask"].numpy(), expected)


def test_exclude_multi_defect_drops_combined_images_and_class(roots):
    kept = open_dataset("mvtec", roots["mvtec"], image_size=SIZE)
    dropped = open_dataset("mvtec", roots["mvtec"], image_size=SIZE, exclude_multi_defect=True)
    assert len(kept) - len(dropped) == 1
    assert "combined" in kept.vocabulary("cable") and "combined" not in dropped.vocabulary("cable")
    assert all(dropped[i]["defects"] != ("combined",) for i in range(len(dropped)))
    visa = open_dataset("visa", roots["visa"], image_size=SIZE, exclude_multi_defect=True)
    assert all(len(visa.defects_of(i)) <= 1 for i in range(len(visa)))
    assert len(visa) == 2 + 2  # per product: one good, one single-defect image


def test_splits(roots):
    train = open_dataset("mvtec", roots["mvtec"], image_size=SIZE, split="train")
    test = open_dataset("mvtec", roots["mvtec"], image_size=SIZE, split="test")
    both = open_dataset("mvtec", roots["mvtec"], image_size=SIZE, split="all")
    assert len(train) == 2 and all(r.native == () for r in train.records)
    assert len(both) == len(train) + len(test)
    visa_train = open_dataset("visa", roots["visa"], image_size=SIZE, split="train")
    assert len(visa_train) == 2 and visa_train[0]["label"] == 0
    with pytest.raises(ValueError, match="split must be one of"):
        open_dataset("mvtec", roots["mvtec"], image_size=SIZE, split="val")
    with pytest.raises(ValueError, match="vocab_scope"):
        open_dataset("mvtec", roots["mvtec"], image_size=SIZE, vocab_scope="global")


def test_products_filter_and_subset(roots):
    dataset = open_dataset("mad_sim", roots["mad_sim"], image_size=SIZE)
    only = open_dataset("mad_sim", roots["mad_sim"], image_size=SIZE, products=["01Gorilla"])
    part = dataset.subset("gorilla")
    assert only.products == part.products == ("gorilla",)
    assert [r.path for r in only.records] == [r.path for r in part.records]
    assert torch.equal(only[0]["image"], part[0]["image"])
    assert part.dataset_vocabulary == dataset.dataset_vocabulary
    with pytest.raises(ValueError, match=r"products \['dragon'\] not found in MAD-Sim"):
        open_dataset("mad_sim", roots["mad_sim"], image_size=SIZE, products=["dragon"])
    with pytest.raises(KeyError, match="dragon"):
        dataset.subset("dragon")


def test_loading_is_deterministic_and_works_with_dataloader_workers(roots):
    dataset = open_dataset("visa", roots["visa"], image_size=SIZE)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_samples)
    batches = list(loader)
    direct = collate_samples([dataset[i] for i in range(len(dataset))])
    assert torch.equal(torch.cat([b["image"] for b in batches]), direct["image"])
    assert torch.equal(torch.cat([b["type_mask"] for b in batches]), direct["type_mask"])
    assert sum((b["path"] for b in batches), []) == direct["path"]
    again = open_dataset("visa", roots["visa"], image_size=SIZE)
    assert [r.path for r in again.records] == [r.path for r in dataset.records]


def test_datasets_pickle_for_spawned_workers(roots):
    dataset = open_dataset("real_iad", roots["real_iad"], image_size=SIZE)
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[1]["type_mask"], dataset[1]["type_mask"]) and copy.products == dataset.products


def test_grey_scale_images_are_read_as_rgb(tmp_path):
    grey = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    root = write_tree("mvtec", tmp_path, [LayoutImage("grid", "test", (), grey, None)])
    # a one-channel PNG, as MVTec-AD ships grid, screw and zipper
    Image.fromarray(np.full((HEIGHT, WIDTH), 200, np.uint8)).save(root / "grid/test/good/000.png")
    sample = open_dataset("mvtec", root, image_size=SIZE)[0]
    expected = (200 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(sample["image"][:, 0, 0], expected.float(), atol=1e-5)


def test_collate_samples_batches_tensors_and_keeps_strings():
    samples = [
        {"image": torch.zeros(3, 2, 2), "label": 1, "product": "a", "defects": ("scratch",)},
        {"image": torch.ones(3, 2, 2), "label": 0, "product": "b", "defects": ()},
    ]
    batch = collate_samples(samples)
    assert batch["image"].shape == (2, 3, 2, 2)
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [1, 0]
    assert batch["product"] == ["a", "b"] and batch["defects"] == [("scratch",), ()]
    with pytest.raises(ValueError, match="empty batch"):
        collate_samples([])


def test_seen_unseen_marks_the_loaded_vocabulary(roots):
    dataset = open_dataset("mpdd", roots["mpdd"], image_size=SIZE)
    marks = seen_unseen(dataset.knowledge, "mvtec")
    assert {d: marks[d] for d in dataset.dataset_vocabulary} == {"bent": True, "flattening": False, "mismatch": False}


def test_a_synthetic_knowledge_file_picks_the_loader_by_layout(tmp_path):
    knowledge = tmp_path / "synthetic_demo.yaml"
    knowledge.write_text(
        "name: synthetic_demo\nlayout: visa\nlabels: {scratch: scratch, hole: hole}\n"
        "products: {gear: [scratch, hole]}\n",
        encoding="utf-8",
    )
    masks = {"scratch": np.zeros((HEIGHT, WIDTH), bool), "hole": np.zeros((HEIGHT, WIDTH), bool)}
    masks["scratch"][REGIONS[0]] = True
    masks["hole"][REGIONS[1]] = True
    image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    write_tree(
        "visa",
        tmp_path / "world",
        [
            LayoutImage("gear", "train", (), image, None),
            LayoutImage("gear", "test", ("scratch", "hole"), image, masks),
        ],
    )
    dataset = open_dataset(knowledge, tmp_path / "world", image_size=SIZE)
    assert type(dataset).__name__ == "VisA" and dataset.name == "synthetic_demo"
    sample = dataset[0]
    assert sample["defects"] == ("hole", "scratch")
    assert np.array_equal(
        sample["type_mask"].numpy(), _expected_types(LayoutImage("gear", "test", ("scratch", "hole"), image, masks),
                                                     ("hole", "scratch"), dataset.knowledge, False)
    )
