"""The synthetic worlds: written in the real layouts, read back by the real loaders."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest
import torch

from dapo.data import open_dataset
from dapo.data.knowledge import load_knowledge, seen_unseen
from dapo.synthetic.worlds import (
    COMPACT_IMAGE_SIZE,
    MARKER,
    SOURCE_WORLD,
    TARGET_WORLDS,
    WORLDS,
    ensure_worlds,
    iter_world_images,
    world_root,
    write_world,
)


@pytest.fixture(scope="module")
def smoke_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    roots = {name: world_root(root, name, smoke=True) for name in WORLDS}
    ensure_worlds(roots, smoke=True, seed=0)
    return roots


def test_profile_constants_name_three_worlds_in_three_layouts():
    assert SOURCE_WORLD == "synthetic_source" and set(TARGET_WORLDS) == {"synthetic_target", "synthetic_mpdd"}
    assert {WORLDS[n].layout for n in WORLDS} == {"mvtec", "visa", "mpdd"}
    assert COMPACT_IMAGE_SIZE == 128


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_knowledge_file_matches_the_world_definition(name):
    world, knowledge = WORLDS[name], load_knowledge(name)
    assert knowledge.layout == world.layout
    assert set(knowledge.products) == {p.name for p in world.products}
    for product in world.products:
        assert set(knowledge.product_labels[product.name]) == set(product.defects)
        assert knowledge.product_defects(product.name) == tuple(sorted(set(product.defects.values())))


def test_target_worlds_hold_defect_types_unseen_in_the_source_world_missing_among_them():
    for target in TARGET_WORLDS:
        unseen = {d for d, seen in seen_unseen(target, SOURCE_WORLD).items() if not seen}
        assert "missing" in unseen and len(unseen) >= 3
        assert any(seen for seen in seen_unseen(target, SOURCE_WORLD).values())


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_loaders_read_the_smoke_worlds(smoke_roots, name):
    world = WORLDS[name]
    dataset = open_dataset(name, smoke_roots[name], image_size=COMPACT_IMAGE_SIZE)
    counts = world.sizes["smoke"]
    expected = sum(counts.test_good + counts.per_defect * len(p.defects) + (counts.two_defects if len(p.defects) > 1 else 0)
                   for p in world.products)
    assert len(dataset) == expected
    assert set(dataset.products) == {p.name for p in world.products}
    assert dataset.dataset_vocabulary == world.superclasses()
    train = open_dataset(name, smoke_roots[name], image_size=COMPACT_IMAGE_SIZE, split="train")
    assert len(train) == counts.train_good * len(world.products)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (3, COMPACT_IMAGE_SIZE, COMPACT_IMAGE_SIZE)
        assert sample["label"] == int(bool(sample["defects"])) == int(sample["mask"].max())
        present = {dataset.vocabulary(sample["product"])[k - 1] for k in sample["type_mask"].unique().tolist() if k}
        assert present == set(sample["defects"])


def test_two_defect_images_keep_both_types_in_the_visa_layout(smoke_roots):
    dataset = open_dataset("synthetic_target", smoke_roots["synthetic_target"], image_size=COMPACT_IMAGE_SIZE)
    doubles = [dataset[i] for i in range(len(dataset)) if len(dataset[i]["defects"]) == 2]
    assert len(doubles) == len(WORLDS["synthetic_target"].products)
    assert all(len(torch.unique(s["type_mask"])) == 3 for s in doubles)


def test_ensure_worlds_reuses_an_identical_world_and_refuses_foreign_folders(smoke_roots, tmp_path):
    name = "synthetic_mpdd"
    marker = smoke_roots[name] / MARKER
    stamp = marker.stat().st_mtime_ns
    ensure_worlds({name: smoke_roots[name]}, smoke=True, seed=0)
    assert marker.stat().st_mtime_ns == stamp
    assert json.loads(marker.read_text())["seed"] == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        write_world(name, foreign, smoke=True)


def test_smoke_images_are_the_first_images_of_the_default_world():
    world = WORLDS["synthetic_source"]
    smoke = next(iter_world_images(world, "smoke", seed=4))
    default = next(iter_world_images(world, "default", seed=4))
    assert np.array_equal(smoke.image, default.image)
    other = next(iter_world_images(world, "smoke", seed=5))
    assert not np.array_equal(smoke.image, other.image)


def test_world_images_carry_native_labels_and_masks():
    world = WORLDS["synthetic_mpdd"]
    defective = [im for im in islice(iter_world_images(world, "smoke", seed=0), 20) if im.defects]
    assert defective and all(set(im.masks) == set(im.defects) for im in defective)
    natives = {label for p in world.products for label in p.defects}
    assert {label for im in defective for label in im.defects} <= natives
