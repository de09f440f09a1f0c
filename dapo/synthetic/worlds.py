"""The synthetic worlds: generated datasets written in the official layouts of real benchmarks.

Three worlds, each read by the real loader of the layout it imitates (``dapo.data``) through
its knowledge file ``dapo/data/knowledge/<world>.yaml``:

================== ======== ========== ==============================================
world              layout   style      role
================== ======== ========== ==============================================
synthetic_source   mvtec    studio     training world (textures and objects; D1)
synthetic_target   visa     conveyor   zero-shot target; D2 adds missing, burnt, spot;
                                       images with two defect types (VisA keeps both)
synthetic_mpdd     mpdd     workbench  zero-shot target; D3 adds rust, flattening, missing
================== ======== ========== ==============================================

D1 = {bent, contamination, crack, cut, hole, liquid, scratch, thread}. The compact CLIP saw
every defect type of every product in its pretraining captions (DAPO's zero-shot premise:
the text encoder knows "missing" before DAPO is trained); the worlds only decide which
types DAPO *training* sees. Native labels follow each dataset's naming style.

Every image depends only on ``(seed, world, split, product, label, k)``, so the smoke size
is a prefix of the default size and a world can be regenerated bit for bit.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from dapo.data.knowledge import load_knowledge
from dapo.data.layouts import LayoutImage, write_tree
from dapo.synthetic.generator import generate_image, make_rng
from dapo.util.progress import tqdm

COMPACT_IMAGE_SIZE = 128
SOURCE_WORLD = "synthetic_source"
TARGET_WORLDS = ("synthetic_target", "synthetic_mpdd")
MARKER = "SYNTHETIC_WORLD.json"
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class WorldProduct:
    """A product of a world: generator product name and native label -> defect superclass."""

    name: str
    defects: dict[str, str]


@dataclass(frozen=True)
class WorldSize:
    """Images per product: ``train_good`` and ``test_good`` normals, ``per_defect`` images per
    native label, and ``two_defects`` test images with two of the product's defect types."""

    train_good: int
    test_good: int
    per_defect: int
    two_defects: int = 0


@dataclass(frozen=True)
class World:
    name: str
    layout: str
    style: str
    products: tuple[WorldProduct, ...]
    sizes: dict[str, WorldSize]
    severity: tuple[float, float] = (0.25, 1.0)

    def superclasses(self) -> tuple[str, ...]:
        return tuple(sorted({s for p in self.products for s in p.defects.values()}))


WORLDS: dict[str, World] = {w.name: w for w in (
    World("synthetic_source", "mvtec", "studio", (
        WorldProduct("canvas", {"hole": "hole", "cut": "cut", "thread": "thread",
                                "metal_contamination": "contamination", "oil": "liquid"}),
        WorldProduct("plank", {"scratch": "scratch", "crack": "crack", "hole": "hole", "oil": "liquid"}),
        WorldProduct("marble", {"crack": "crack", "scratch": "scratch", "metal_contamination": "contamination"}),
        WorldProduct("gear", {"bent_tooth": "bent", "scratch": "scratch", "crack": "crack",
                              "metal_contamination": "contamination"}),
        WorldProduct("button", {"crack": "crack", "scratch": "scratch", "thread": "thread", "cut": "cut"}),
        WorldProduct("battery", {"bent_case": "bent", "scratch_cap": "scratch", "cut_wrap": "cut", "oil": "liquid"}),
    ), {"default": WorldSize(8, 16, 10), "smoke": WorldSize(2, 3, 2)}),
    World("synthetic_target", "visa", "conveyor", (
        WorldProduct("circuit", {"missing": "missing", "burnt": "burnt", "scratch": "scratch", "bent": "bent"}),
        WorldProduct("cookie", {"burnt": "burnt", "small cracks": "crack", "different colour spot": "spot"}),
        WorldProduct("tablets", {"missing": "missing", "small cracks": "crack", "different colour spot": "spot"}),
        WorldProduct("fuse", {"missing": "missing", "bent": "bent", "small scratches": "scratch"}),
        WorldProduct("socket", {"missing": "missing", "burnt": "burnt", "scratch": "scratch"}),
    ), {"default": WorldSize(10, 20, 10, two_defects=6), "smoke": WorldSize(2, 3, 2, two_defects=1)}),
    World("synthetic_mpdd", "mpdd", "workbench", (
        WorldProduct("bracket", {"hole": "hole", "scratches": "scratch", "major_rust": "rust",
                                 "missing_part": "missing"}),
        WorldProduct("nut", {"flattening": "flattening", "major_rust": "rust", "scratches": "scratch"}),
        WorldProduct("tubes", {"flattening": "flattening", "major_rust": "rust", "missing_part": "missing"}),
        WorldProduct("plate", {"hole": "hole", "scratches": "scratch", "major_rust": "rust", "bent_edge": "bent"}),
    ), {"default": WorldSize(8, 14, 9), "smoke": WorldSize(2, 3, 2)}),
)}


def get_world(name: str) -> World:
    try:
        return WORLDS[name]
    except KeyError:
        raise KeyError(f"unknown synthetic world {name!r}; known: {sorted(WORLDS)}") from None


def world_root(data_root: str | Path, name: str, smoke: bool = False) -> Path:
    """Where a world lives: ``<data_root>/synthetic/<default|smoke>/<name>``."""
    get_world(name)
    return Path(data_root) / "synthetic" / ("smoke" if smoke else "default") / name


def _two_defect_pairs(product: WorldProduct) -> list[tuple[str, str]]:
    labels = sorted(product.defects)
    return [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]


def iter_world_images(world: World, size: str, seed: int, image_size: int = COMPACT_IMAGE_SIZE
                      ) -> Iterator[LayoutImage]:
    """Every image of a world at ``size`` (``"default"`` or ``"smoke"``), in writing order."""
    counts = world.sizes[size]
    for product in world.products:
        plan: list[tuple[str, tuple[str, ...], int]] = []
        plan += [("train", (), k) for k in range(counts.train_good)]
        plan += [("test", (), k) for k in range(counts.test_good)]
        plan += [("test", (label,), k) for label in product.defects for k in range(counts.per_defect)]
        pairs = _two_defect_pairs(product)
        plan += [("test", pairs[k % len(pairs)], k) for k in range(counts.two_defects if pairs else 0)]
        for split, labels, k in plan:
            rng = make_rng(seed, world.name, split, product.name, "+".join(labels) or "good", k)
            superclasses = tuple(product.defects[label] for label in labels)
            image = generate_image(product.name, superclasses, rng, size=image_size, style=world.style,
                                   severity=world.severity)
            native = {product.defects[label]: label for label in labels}
            ordered = tuple(native[s] for s in image.defects)  # drawing order: later defects on top
            masks = {native[s]: image.masks[s] for s in image.defects}
            yield LayoutImage(product.name, split, ordered, image.image, masks or None)


def _signature(world: World, size: str, seed: int, image_size: int) -> dict:
    return {"world": world.name, "size": size, "seed": seed, "image_size": image_size,
            "generator_version": GENERATOR_VERSION, "counts": asdict(world.sizes[size])}


def write_world(name: str, root: str | Path, *, smoke: bool = False, seed: int = 0,
                image_size: int = COMPACT_IMAGE_SIZE) -> Path:
    """Generate world ``name`` under ``root`` (replacing an earlier synthetic world there)."""
    world = get_world(name)
    size = "smoke" if smoke else "default"
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise FileExistsError(f"{root} is not empty and holds no {MARKER}; refusing to overwrite it")
        shutil.rmtree(root)
    counts = world.sizes[size]
    total = sum(counts.train_good + counts.test_good + counts.per_defect * len(p.defects)
                + (counts.two_defects if len(p.defects) > 1 else 0) for p in world.products)
    images = tqdm(iter_world_images(world, size, seed, image_size), total=total, desc=f"generating {name}")
    knowledge = load_knowledge(name)
    mask_ids = {p.name: knowledge.mask_ids(p.name) for p in world.products} if world.layout == "visa" else None
    write_tree(world.layout, root, images, mask_ids=mask_ids)
    (root / MARKER).write_text(json.dumps(_signature(world, size, seed, image_size), indent=1))
    return root


def ensure_worlds(dataset_roots: Mapping[str, str | Path], *, smoke: bool = False, seed: int = 0,
                  image_size: int = COMPACT_IMAGE_SIZE) -> dict[str, Path]:
    """Generate each world of ``dataset_roots`` (name -> root) unless the same one is already there."""
    done = {}
    for name, root in dataset_roots.items():
        world = get_world(name)
        root = Path(root)
        marker = root / MARKER
        expected = _signature(world, "smoke" if smoke else "default", seed, image_size)
        if not (marker.is_file() and json.loads(marker.read_text()) == expected):
            write_world(name, root, smoke=smoke, seed=seed, image_size=image_size)
        done[name] = root
    return done
