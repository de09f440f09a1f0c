"""A plain folder of one's own images: ``good/``, one folder per defect name, optional ``masks/``.

Layout (``root`` is the folder passed as ``--root``)::

    <root>/good/<any/sub/path>/<name>.<png|jpg|...>        normal images
    <root>/<defect>/<any/sub/path>/<name>.<png|jpg|...>    images showing that defect
    <root>/masks/<defect>/<same sub/path>/<name>.png       optional: binary mask (nonzero = defect;
                                                           <name>_mask.png is accepted too; .bmp, .tif
                                                           and lossy .jpg, binarised at 128, too)

No knowledge base is involved: the defect vocabulary is the set of defect folder names, with
underscores read as spaces (``metal_contamination/`` is the defect "metal contamination"),
checked by :func:`dapo.clip.vocabulary.check_vocabulary` (two folders naming the same defect once
normalised, ``Scratch/`` and ``scratch/``, are refused). The folder is one product, named by
``product=`` or else after the root folder; it has no train/test split, so every split gives
all its images. Hidden files and folders are skipped, as are files without an image suffix.

Masks are optional as a whole: with ``masks/``, every defect image needs its mask
(:class:`~dapo.data.base.MissingMaskError` names the expected file), a mask folder without a
defect folder is refused, and ``masks/good/`` is ignored. Without ``masks/`` the dataset is
image-level only (``has_masks`` is False): defect images carry empty pixel masks, which is
stated once when the dataset is opened; image-level metrics are meaningful, pixel metrics and
training are not (the command line refuses to train on it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from dapo.clip.vocabulary import check_vocabulary, normalise_name
from dapo.data.base import IMAGE_SUFFIXES, AnomalyDataset, DatasetRootError, MissingMaskError, Record
from dapo.data.images import SuspiciousMaskWarning, check_geometry, clip_tensor, read_rgb, state_once
from dapo.data.knowledge import DatasetKnowledge, normalise_label, product_key

GOOD = "good"
MASKS = "masks"
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")  # JPEG: binarised at 128 (dapo.data.images)
#: Image formats Pillow may read that the loaders do not list: stated once, never skipped in silence.
OTHER_IMAGE_SUFFIXES = (".webp", ".gif", ".jp2", ".jpe", ".jfif", ".heic", ".heif", ".avif", ".ppm", ".pgm", ".pbm",
                        ".tga", ".ico", ".dib", ".pcx")
FOLDER_HELP = (
    "  <root>/good/*.png                      normal images\n"
    "  <root>/<defect name>/*.png             one folder per defect (the folder name is the defect name)\n"
    "  <root>/masks/<defect name>/<name>.png  optional binary masks mirroring the defect folders"
)


class SkippedFileWarning(UserWarning):
    """Files that look like images but are in a format the loaders do not read were skipped."""


class FolderLayoutError(ValueError):
    """A folder dataset does not follow the layout (empty folder, stray image or mask folder, ...)."""


def defect_name(folder_name: str) -> str:
    """The defect a folder stands for: its name with underscores read as spaces."""
    return " ".join(folder_name.replace("_", " ").split())


def check_not_normal(names: Sequence[str], source: str) -> None:
    """Refuse a defect called "normal": channel 0 is the normal state (normal images go in ``good/``)."""
    for name in names:
        if normalise_name(name) == "normal":
            raise FolderLayoutError(f"{source}{name}: a defect cannot be called {name!r} (the normal state is "
                                    f"channel 0; normal images go in good/)")


def _visible(path: Path, top: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(top).parts)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), hidden files and folders skipped; files in
    other image formats (``.webp``, ``.gif``, ...) are skipped and stated once (convert them to PNG)."""
    files = [p for p in folder.rglob("*") if p.is_file() and _visible(p, folder)]
    other = sorted(p for p in files if p.suffix.lower() in OTHER_IMAGE_SUFFIXES)
    if other:
        state_once(f"other suffix {folder}", f"{len(other)} file(s) under {folder} in an image format the loaders "
                                             f"do not read are skipped (e.g. {other[0]}; read: "
                                             f"{', '.join(IMAGE_SUFFIXES)}): convert them to PNG", SkippedFileWarning)
    return sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(root: Path) -> tuple[Path | None, dict[str, Path]]:
    """``good/`` (or ``None``) and the defect folders of ``root`` (defect name -> folder), checked."""
    strays = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
              and not p.name.startswith(".")]
    if strays:
        raise FolderLayoutError(f"image {strays[0]} lies directly in the dataset root; put normal images in "
                                f"{root / GOOD} and defect images in {root}/<defect name>/")
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    good = root / GOOD if (root / GOOD).is_dir() else None
    misspelt = [p for p in folders if p.name.casefold() in (GOOD, MASKS) and p.name not in (GOOD, MASKS)]
    if misspelt:
        raise FolderLayoutError(f"folder {misspelt[0]} would be a defect called {misspelt[0].name!r}; the reserved "
                                f"folder names are lower case: {GOOD}/ and {MASKS}/")
    defects = [p for p in folders if p.name not in (GOOD, MASKS)]
    check_vocabulary([p.name for p in defects], allow_empty=True, source=f"the defect folders of {root}")
    names = [defect_name(p.name) for p in defects]
    check_not_normal(names, f"folder {root}/")
    if good is None and not defects:
        raise FolderLayoutError(f"{root} holds no good/ or defect folder; expected the folder layout:\n{FOLDER_HELP}")
    for folder in ([good] if good else []) + defects:
        if not list_images(folder):
            raise FolderLayoutError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); remove it or "
                                    f"add images")
    return good, dict(zip(names, defects))


def find_mask(mask_root: Path, folder: Path, image: Path) -> Path:
    """The mask of ``image`` (in defect ``folder``) under ``mask_root``: same relative path, ``.png``
    (or another lossless suffix), stem or ``<stem>_mask``; exactly one must exist."""
    relative = image.relative_to(folder)
    directory = mask_root / folder.name / relative.parent
    stems = (relative.stem, f"{relative.stem}_mask")
    found = [directory / f"{stem}{suffix}" for stem in stems for suffix in MASK_SUFFIXES
             if (directory / f"{stem}{suffix}").is_file()]
    if not found:
        raise MissingMaskError(f"defect image {image} has no mask; expected {directory / (relative.stem + '.png')} "
                               f"(masks/ mirrors the defect folders)")
    if len(found) > 1:
        raise FolderLayoutError(f"defect image {image} has several masks: {[str(p) for p in found]}; keep one")
    return found[0]


def folder_knowledge(names: Sequence[str], folders: Sequence[Path], product: str, root: Path) -> DatasetKnowledge:
    """A knowledge record whose labels are the folder names and whose defects are their names."""
    labels = {normalise_label(folder.name): name for name, folder in zip(names, folders)}
    return DatasetKnowledge(name="folder", title=f"folder dataset {root}", layout="folder", labels=labels,
                            product_labels={product: tuple(labels)}, source=str(root))


class FolderDataset(AnomalyDataset):
    """One's own images in the plain folder layout (module docstring); one product.

    ``product`` names the product (handcrafted prompts use it); default: the root folder's name.
    Other arguments: :class:`~dapo.data.base.AnomalyDataset` (``split`` is accepted and ignored:
    the folder has no split; ``knowledge`` is built from the folders).
    """

    layout_help = FOLDER_HELP

    def __init__(self, root: str | Path, *, image_size: int, split: str = "test", vocab_scope: str = "product",
                 exclude_multi_defect: bool = False, products: Sequence[str] | None = None,
                 product: str | None = None, knowledge: DatasetKnowledge | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetRootError(f"folder dataset root {root} does not exist or is not a folder; expected the "
                                   f"folder layout:\n{FOLDER_HELP}")
        self._good, self._folders = class_folders(root)
        self._product = product_key(product or root.resolve().name)
        self._split_with_images = "train" if split == "train" else "test"
        self.has_masks = (root / MASKS).is_dir()
        if self.has_masks:
            strays = sorted(p for p in (root / MASKS).iterdir() if p.is_dir() and not p.name.startswith(".")
                            and p.name != GOOD and p.name not in {f.name for f in self._folders.values()})
            if strays:
                raise FolderLayoutError(f"mask folder {strays[0]} has no defect folder {root / strays[0].name}")
        if knowledge is None:
            knowledge = folder_knowledge(list(self._folders), list(self._folders.values()), self._product, root)
        super().__init__(root, image_size=image_size, split=split, vocab_scope=vocab_scope,
                         exclude_multi_defect=exclude_multi_defect, products=products, knowledge=knowledge,
                         mean=mean, std=std)
        if self._folders and not self.has_masks:
            warnings.warn(f"folder dataset {root} has no {MASKS}/ folder: its defect images carry empty pixel "
                          f"masks (image-level labels only; pixel metrics and training need masks)",
                          SuspiciousMaskWarning, stacklevel=2)

    def _product_names(self) -> list[str]:
        return [self._product]

    def _index(self, split: str, products: set[str] | None) -> list[Record]:
        if split != self._split_with_images or (products is not None and self._product not in products):
            return []
        records = [Record(str(p), self._product, (), None) for p in (list_images(self._good) if self._good else [])]
        for folder in self._folders.values():
            for path in list_images(folder):
                mask = find_mask(self.root / MASKS, folder, path) if self.has_masks else None
                records.append(Record(str(path), self._product, (folder.name,), str(mask) if mask else None))
        return records

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        if not record.native or record.mask_path is not None:
            return super().__getitem__(index)
        size = self.image_size  # image-level dataset (no masks/): a defect image with an empty pixel mask
        rgb = read_rgb(record.path)
        check_geometry(record.path, rgb.shape, size)
        return {"image": clip_tensor(rgb, size, self.mean, self.std),
                "mask": torch.zeros(size, size), "type_mask": torch.zeros(size, size, dtype=torch.int64),
                "label": 1, "product": record.product, "defects": self._defects[index], "path": record.path}
