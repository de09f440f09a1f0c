"""Common base of the dataset loaders: the sample contract, defect mapping, errors.

A loader subclass only indexes its layout into :class:`Record` s (``_index``); reading,
resizing, defect mapping, vocabularies, filtering and subsetting live here (file decoding:
:mod:`dapo.data.images`). Samples follow
the contract of ``docs/ARCHITECTURE.md``::

    image      float32 [3, S, S]  bicubic resize to S x S, normalised by the dataset's mean/std
    mask       float32 [S, S]     binary anomaly mask, nearest-neighbour resize
    type_mask  int64   [S, S]     0 normal, k = 1-based index into the vocabulary in force
    label      int                0 normal, 1 anomalous
    product    str
    defects    tuple[str, ...]    superclasses present, sorted; () for normal
    path       str                image file

Vocabulary in force: ``vocab_scope="product"`` (default) indexes the product's vocabulary
(MultiADS protocol: only the product's relevant types plus normal), ``"dataset"`` the union
over the dataset's products. A product's vocabulary is its knowledge-base list, united with
any superclass found on disk for it (a product missing from the knowledge base, e.g. MAD-Real
"pig", so takes its defects from disk).

Multi-defect images (several superclasses, or a native label such as MVTec ``combined``) are
kept by default, as in MultiADS testing; ``exclude_multi_defect=True`` drops them and removes
the multi-defect superclass (``combined``) from the vocabularies, as MultiADS does for training.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dapo.data.images import (
    SuspiciousMaskWarning,
    check_geometry,
    clip_tensor,
    normalisation,
    read_label_map,
    read_rgb,
    state_once,
)
from dapo.data.knowledge import DatasetKnowledge, load_knowledge, product_key

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "test", "all")
VOCAB_SCOPES = ("product", "dataset")


class DatasetRootError(FileNotFoundError):
    """The dataset root (or a file the layout requires) is missing."""


class MissingMaskError(FileNotFoundError):
    """An anomalous image has no ground-truth mask."""


class MaskSizeMismatchError(ValueError):
    """A mask and its image differ in size."""


class EmptyProductError(ValueError):
    """A product has no images in the requested split."""


@dataclass(frozen=True)
class Record:
    """One indexed image.

    ``native`` holds the dataset-native defect labels (``()`` for normal). ``mask_ids`` is
    set for class-indexed masks (VisA): pixel value -> native label; otherwise every nonzero
    mask pixel belongs to the image's single superclass.
    """

    path: str
    product: str
    native: tuple[str, ...]
    mask_path: str | None
    mask_ids: tuple[tuple[int, str], ...] = ()


def resize_nearest(array: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``size x size`` (pixel-centre sampling)."""
    height, width = array.shape
    rows = np.minimum(((np.arange(size) + 0.5) * height / size).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * width / size).astype(np.int64), width - 1)
    return array[rows[:, None], cols[None, :]]


class AnomalyDataset(Dataset):
    """Base loader. Subclasses set ``knowledge_name`` and implement ``_index(split)``.

    Parameters
    ----------
    root:
        Dataset root, as distributed by its authors (layouts: ``dapo.data.layouts``).
    image_size:
        Model input size ``S`` (518 in the paper).
    split:
        ``"test"`` (default), ``"train"`` or ``"all"`` (both).
    vocab_scope:
        ``"product"`` or ``"dataset"``: which vocabulary ``type_mask`` ids index.
    exclude_multi_defect:
        Drop images with several defect types (the MultiADS training choice).
    products:
        Keep only these products (names as on disk or canonical).
    knowledge:
        Knowledge base to use; defaults to the loader's own (``knowledge_name``).
    mean, std:
        Per-channel image normalisation; default OpenAI CLIP's (``open_clip.OPENAI_DATASET_MEAN``
        / ``_STD``). Pass the backbone's ``mean``/``std`` for weights trained with others.
    """

    knowledge_name: str = ""
    layout_help: str = ""

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: int,
        split: str = "test",
        vocab_scope: str = "product",
        exclude_multi_defect: bool = False,
        products: Sequence[str] | None = None,
        knowledge: DatasetKnowledge | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if vocab_scope not in VOCAB_SCOPES:
            raise ValueError(f"vocab_scope must be one of {VOCAB_SCOPES}, got {vocab_scope!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if products is not None and (isinstance(products, str) or not all(isinstance(p, str) for p in products)):
            raise ValueError(f"products must be a list of product names (or None for all), got {products!r}")
        if not isinstance(exclude_multi_defect, bool):
            raise ValueError(f"exclude_multi_defect must be True or False, got {exclude_multi_defect!r}")
        self.knowledge = knowledge if knowledge is not None else load_knowledge(self.knowledge_name)
        self.name = self.knowledge.name
        self.root = Path(root)
        self.image_size = int(image_size)
        self.split = split
        self.vocab_scope = vocab_scope
        self.exclude_multi_defect = exclude_multi_defect
        self.mean, self.std = normalisation(mean, std)
        if not self.root.is_dir():
            raise DatasetRootError(
                f"{self.knowledge.title} root {self.root} does not exist or is not a folder; "
                f"expected the {self.knowledge.layout} layout:\n{self.layout_help}"
            )
        records = self._load_records(products)
        self._defects = [self._superclasses(record) for record in records]
        on_disk: dict[str, set[str]] = {}
        for record, defects in zip(records, self._defects):
            on_disk.setdefault(record.product, set()).update(defects)
        if exclude_multi_defect:
            keep = [not self._is_multi_defect(r, d) for r, d in zip(records, self._defects)]
            records = [r for r, k in zip(records, keep) if k]
            self._defects = [d for d, k in zip(self._defects, keep) if k]
        self.records = records
        self.products = tuple(dict.fromkeys(record.product for record in records))
        self._vocabularies = {product: self._product_vocabulary(product, on_disk[product]) for product in self.products}
        self._dataset_vocabulary = tuple(sorted({d for v in self._vocabularies.values() for d in v}))

    # ----------------------------------------------------------------- subclass hooks
    def _product_names(self) -> list[str]:
        """Canonical names of the products present under the root (cheap: no image listing)."""
        raise NotImplementedError

    def _index(self, split: str, products: set[str] | None) -> list[Record]:
        """Records of one split (``"train"``/``"test"``), sorted; only ``products`` if given.

        Raises the layout's clear errors (unknown defect, missing mask, missing file); empty
        products are reported by the caller.
        """
        raise NotImplementedError

    def _read_image(self, record: Record) -> np.ndarray:
        """The record's ``(H, W, 3)`` uint8 image (a loader that cuts files into parts overrides it)."""
        return read_rgb(record.path)

    def _read_mask(self, record: Record) -> np.ndarray:
        """The record's raw ``(H, W)`` mask, read as :func:`read_label_map` reads it."""
        return read_label_map(record.mask_path)

    def _decode_mask(self, record: Record, raw: np.ndarray, defects: tuple[str, ...]) -> np.ndarray:
        """Raw mask -> ``(H, W)`` int map: 0 normal, j = 1-based position in ``defects``."""
        if len(defects) != 1:
            raise ValueError(
                f"mask {record.mask_path} is binary but image {record.path} has several defect types {defects}"
            )
        return (raw > 0).astype(np.int64)

    # ----------------------------------------------------------------- public API
    def __len__(self) -> int:
        return len(self.records)

    def vocabulary(self, product: str) -> tuple[str, ...]:
        """Sorted defect superclasses relevant to ``product``."""
        key = product_key(product)
        if key not in self._vocabularies:
            raise KeyError(f"product {product!r} is not in this {self.knowledge.title} dataset; has: {self.products}")
        return self._vocabularies[key]

    @property
    def dataset_vocabulary(self) -> tuple[str, ...]:
        """Sorted union of the products' vocabularies."""
        return self._dataset_vocabulary

    def defects_of(self, index: int) -> tuple[str, ...]:
        """Superclasses of record ``index`` without reading the image."""
        return self._defects[index]

    def is_multi_defect(self, index: int) -> bool:
        """Whether record ``index`` shows several defect types."""
        return self._is_multi_defect(self.records[index], self._defects[index])

    def subset(self, product: str) -> AnomalyDataset:
        """The same dataset restricted to one product (the dataset vocabulary is kept)."""
        key = product_key(product)
        if key not in self._vocabularies:
            raise KeyError(f"product {product!r} is not in this {self.knowledge.title} dataset; has: {self.products}")
        keep = [i for i, record in enumerate(self.records) if record.product == key]
        part = copy.copy(self)
        part.records = [self.records[i] for i in keep]
        part._defects = [self._defects[i] for i in keep]
        part.products = (key,)
        part._vocabularies = {key: self._vocabularies[key]}
        return part

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        defects = self._defects[index]
        image = self._read_image(record)
        check_geometry(record.path, image.shape, self.image_size)
        types = np.zeros(image.shape[:2], dtype=np.int64)
        if record.native:
            raw = self._read_mask(record)
            if raw.shape != image.shape[:2]:
                raise MaskSizeMismatchError(
                    f"mask {record.mask_path} is {raw.shape[1]}x{raw.shape[0]} but image {record.path} "
                    f"is {image.shape[1]}x{image.shape[0]} (width x height)"
                )
            positions = self._decode_mask(record, raw, defects)
            vocabulary = self.vocabulary(record.product) if self.vocab_scope == "product" else self._dataset_vocabulary
            lookup = np.array([0] + [vocabulary.index(d) + 1 for d in defects], dtype=np.int64)
            types = lookup[positions]
        resized = resize_nearest(types, self.image_size)
        if record.native:
            _check_mask_content(record, types, resized)
        types = resized
        return {
            "image": clip_tensor(image, self.image_size, self.mean, self.std),
            "mask": torch.from_numpy((types > 0).astype(np.float32)),
            "type_mask": torch.from_numpy(types),
            "label": int(bool(record.native)),
            "product": record.product,
            "defects": defects,
            "path": record.path,
        }

    # ----------------------------------------------------------------- helpers
    def _load_records(self, products: Sequence[str] | None) -> list[Record]:
        """Index the split(s); refuse unknown and empty products."""
        available = self._product_names()
        wanted = None if products is None else {product_key(p) for p in products}
        if wanted is not None and not wanted <= set(available):
            raise ValueError(
                f"products {sorted(wanted - set(available))} not found in {self.knowledge.title} at {self.root}; "
                f"available: {sorted(available)}"
            )
        splits = ("train", "test") if self.split == "all" else (self.split,)
        records = [record for split in splits for record in self._index(split, wanted)]
        empty = sorted((set(available) if wanted is None else wanted) - {record.product for record in records})
        if empty:
            raise EmptyProductError(
                f"{self.knowledge.title} products {empty} have no {self.split!r} images under {self.root}"
            )
        return records

    def _superclasses(self, record: Record) -> tuple[str, ...]:
        return tuple(sorted({self.knowledge.superclass(label) for label in record.native}))

    def _is_multi_defect(self, record: Record, defects: tuple[str, ...]) -> bool:
        return len(defects) > 1 or any(self.knowledge.is_multi_defect(label) for label in record.native)

    def _product_vocabulary(self, product: str, on_disk: set[str]) -> tuple[str, ...]:
        listed = set(self.knowledge.product_defects(product)) if product in self.knowledge.product_labels else set()
        vocabulary = listed | on_disk
        if self.exclude_multi_defect:
            vocabulary -= self.knowledge.multi_defect_superclasses
        return tuple(sorted(vocabulary))


def _check_mask_content(record: Record, types: np.ndarray, resized: np.ndarray) -> None:
    """State (once per kind) masks of anomalous images that mark no pixel, every pixel, or
    only pixels the nearest-neighbour resize to the input size skips."""
    if not types.any():
        state_once("mask empty", f"anomalous image {record.path} has a mask without an anomalous pixel "
                                 f"({record.mask_path})", SuspiciousMaskWarning)
    elif types.all():
        state_once("mask full", f"mask {record.mask_path} marks every pixel of {record.path} anomalous "
                                f"(an inverted mask?)", SuspiciousMaskWarning)
    elif not resized.any():
        state_once("mask vanished", f"the defect pixels of mask {record.mask_path} all fall between the samples "
                                    f"of the nearest-neighbour resize to {resized.shape[0]} px; the sample's mask "
                                    f"is empty", SuspiciousMaskWarning)


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: tensors stacked, ``label`` as an int64 tensor, strings and tuples as lists."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif key == "label":
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = list(values)
    return batch
