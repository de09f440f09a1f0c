"""The defect knowledge base: dataset labels -> defect superclasses, prompt words and phrases.

Data lives in YAML files under ``dapo/data/knowledge/``.

``defects.yaml`` (shared by all datasets)::

    templates: [MultiADS text templates, "{}" = state phrase]
    normal:    [MultiADS normal-state phrases, "{}" = product name]
    superclasses:
      <superclass>:
        words: literal defect words of DAPO's abnormal prompt (the <D> slot of Eq. 1)
        multiads: [MultiADS handcrafted state phrases, "{}" = product name]
        same_as: [optional: superclasses of other datasets naming the same defect]

``<dataset>.yaml`` (one per dataset; synthetic worlds add ``synthetic_<world>.yaml``)::

    name: <dataset>                 # the dataset name; by convention the file stem
    title: <display name>           # optional, defaults to name
    layout: mvtec | visa | mpdd | mad_sim | mad_real | real_iad | btad | ksdd | dagm
            | dtd_synthetic   (dapo.data.layouts)
    labels: {<native label>: <superclass>}       # folder names / label strings / codes
    products: {<product>: [<native label>, ...]} # the product's relevant defects
    multi_defect_labels: [<native label>]        # optional: labels meaning "several defects"
    mask_ids: {<product>: {<pixel value>: <native label>}}   # optional, VisA layout:
                                    # class-indexed mask values; may replace `products`
    multiads_prompts: {<superclass>: [phrases]}  # optional: this dataset's own wording

Native labels are compared after :func:`normalise_label` (case, spacing) and product names
after :func:`product_key` (``"01Gorilla"`` -> ``"gorilla"``), so files may use the
official spelling. Every superclass used must be defined in ``defects.yaml`` (a new defect
type is one entry there: its words and MultiADS-style phrases).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dapo.data.layouts import LAYOUTS

KNOWLEDGE_DIR = Path(__file__).with_name("knowledge")
DEFECTS_FILE = KNOWLEDGE_DIR / "defects.yaml"


class UnknownDefectError(ValueError):
    """A native defect label (folder, label string, code) that the knowledge base lacks."""


def normalise_label(label: str) -> str:
    """Canonical form of a native label: lower case, single spaces, no outer spaces."""
    return " ".join(str(label).split()).lower()


def product_key(name: str) -> str:
    """Canonical product name: lower case, without a leading number (``"01Gorilla"`` -> ``"gorilla"``)."""
    return re.sub(r"^\d+", "", str(name).strip()).lower() or str(name).strip().lower()


@dataclass(frozen=True)
class DefectInfo:
    """One defect superclass: DAPO words, MultiADS phrases, synonyms in other datasets."""

    name: str
    words: str
    multiads: tuple[str, ...]
    same_as: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetKnowledge:
    """The knowledge about one dataset (see the module docstring for the file schema)."""

    name: str
    title: str
    layout: str
    labels: dict[str, str]
    product_labels: dict[str, tuple[str, ...]]
    multi_defect_labels: frozenset[str] = frozenset()
    mask_id_table: dict[str, dict[int, str]] = field(default_factory=dict)
    multiads_prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    def superclass(self, native_label: str) -> str:
        """Superclass of a native label; ``UnknownDefectError`` names the label and dataset."""
        key = normalise_label(native_label)
        if key not in self.labels:
            raise UnknownDefectError(
                f"defect label {native_label!r} is not in the {self.title} knowledge base "
                f"({self.source}); known labels: {sorted(self.labels)}"
            )
        return self.labels[key]

    def is_multi_defect(self, native_label: str) -> bool:
        """Whether a native label denotes an image with several defects (MVTec ``combined``)."""
        return normalise_label(native_label) in self.multi_defect_labels

    @property
    def products(self) -> tuple[str, ...]:
        """Product names known to the knowledge base, sorted."""
        return tuple(sorted(self.product_labels))

    @property
    def superclasses(self) -> tuple[str, ...]:
        """All superclasses of the dataset, sorted."""
        return tuple(sorted(set(self.labels.values())))

    @property
    def multi_defect_superclasses(self) -> frozenset[str]:
        """Superclasses that stand for several defects (e.g. ``combined``)."""
        return frozenset(self.labels[label] for label in self.multi_defect_labels)

    def product_defects(self, product: str) -> tuple[str, ...]:
        """Sorted superclasses relevant to ``product`` (the MultiADS-F vocabulary)."""
        key = product_key(product)
        if key not in self.product_labels:
            raise KeyError(f"product {product!r} is not in the {self.title} knowledge base; known: {self.products}")
        return tuple(sorted({self.superclass(label) for label in self.product_labels[key]}))

    def vocabulary(self, product: str | None = None) -> tuple[str, ...]:
        """Defect vocabulary: the product's (MultiADS-F) or, for ``None``, the dataset's (MultiADS)."""
        return self.superclasses if product is None else self.product_defects(product)

    def mask_ids(self, product: str) -> dict[str, int]:
        """Native label -> pixel value of class-indexed (VisA-layout) masks of ``product``.

        From the file's ``mask_ids`` table when present, else 1.. in sorted label order (the
        default numbering of :func:`dapo.data.layouts.write_tree`).
        """
        key = product_key(product)
        if key in self.mask_id_table:
            return {label: value for value, label in self.mask_id_table[key].items()}
        if key not in self.product_labels:
            raise KeyError(f"product {product!r} is not in the {self.title} knowledge base; known: {self.products}")
        return {label: i for i, label in enumerate(sorted(self.product_labels[key]), start=1)}


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ValueError(f"knowledge file {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"knowledge file {path} must hold a mapping at top level")
    return data


def _defect_entries(entries: dict, path: Path) -> dict[str, DefectInfo]:
    defects = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or "words" not in entry or not entry.get("multiads"):
            raise ValueError(f"{path}: superclass {name!r} needs `words` and a non-empty `multiads` list")
        phrases = tuple(entry["multiads"])
        bad = [phrase for phrase in phrases if phrase.count("{}") != 1]
        if bad:
            raise ValueError(f"{path}: superclass {name!r} phrases need exactly one '{{}}': {bad}")
        defects[name] = DefectInfo(name, str(entry["words"]), phrases, tuple(entry.get("same_as", ())))
    return defects


def _dataset_files() -> list[Path]:
    return sorted(path for path in KNOWLEDGE_DIR.glob("*.yaml") if path != DEFECTS_FILE)


@functools.cache
def _shared() -> dict:
    data = _read_yaml(DEFECTS_FILE)
    for key in ("templates", "normal", "superclasses"):
        if key not in data:
            raise ValueError(f"{DEFECTS_FILE} lacks the `{key}` section")
    return data


@functools.cache
def _defect_registry() -> dict[str, DefectInfo]:
    return _defect_entries(_shared()["superclasses"], DEFECTS_FILE)


def _defect(superclass: str) -> DefectInfo:
    registry = _defect_registry()
    if superclass not in registry:
        raise KeyError(f"unknown defect superclass {superclass!r}; known: {sorted(registry)}")
    return registry[superclass]


def available_datasets() -> tuple[str, ...]:
    """Names of the datasets with a knowledge file in the package."""
    return tuple(path.stem for path in _dataset_files())


def load_knowledge(dataset: str | Path) -> DatasetKnowledge:
    """Knowledge of a dataset, by name (``"mvtec"``, ``"synthetic_x"``) or YAML path."""
    path = Path(dataset)
    if path.suffix not in (".yaml", ".yml"):
        path = KNOWLEDGE_DIR / f"{dataset}.yaml"
        if not path.is_file():
            from dapo.util.suggest import unknown_name

            raise FileNotFoundError(f"no knowledge file for dataset {dataset!r}: "
                                    + unknown_name("dataset", str(dataset), available_datasets()))
    return _load_file(str(path.resolve()))


@functools.cache
def _load_file(path_name: str) -> DatasetKnowledge:
    path = Path(path_name)
    data = _read_yaml(path)
    for key in ("name", "layout", "labels"):
        if key not in data:
            raise ValueError(f"knowledge file {path} lacks the `{key}` entry")
    if data["layout"] not in LAYOUTS:
        raise ValueError(f"{path}: layout {data['layout']!r} is not one of {LAYOUTS}")
    labels: dict[str, str] = {}
    for label, superclass in data["labels"].items():
        key = normalise_label(label)
        if key in labels:
            raise ValueError(f"{path}: label {label!r} is listed twice (labels compare case-insensitively)")
        labels[key] = str(superclass)
    registry = _defect_registry()
    unknown = sorted(set(labels.values()) - set(registry))
    if unknown:
        raise ValueError(f"{path}: superclasses {unknown} are not defined in {DEFECTS_FILE}")
    mask_table = {
        product_key(product): {int(value): normalise_label(label) for value, label in table.items()}
        for product, table in (data.get("mask_ids") or {}).items()
    }
    products = data.get("products")
    if products is None:
        if not mask_table:
            raise ValueError(f"knowledge file {path} needs `products` (or `mask_ids`)")
        products = {product: [table[v] for v in sorted(table)] for product, table in mask_table.items()}
    product_labels = {product_key(p): tuple(normalise_label(label) for label in names) for p, names in products.items()}
    listed = {label for names in product_labels.values() for label in names}
    listed |= {label for table in mask_table.values() for label in table.values()}
    missing = sorted(listed - set(labels))
    if missing:
        raise ValueError(f"{path}: product labels {missing} have no entry in `labels`")
    multi = frozenset(normalise_label(label) for label in data.get("multi_defect_labels", ()))
    if not multi <= set(labels):
        raise ValueError(f"{path}: multi_defect_labels {sorted(multi - set(labels))} have no entry in `labels`")
    prompts = {name: tuple(phrases) for name, phrases in (data.get("multiads_prompts") or {}).items()}
    if set(prompts) - set(registry):
        raise ValueError(f"{path}: multiads_prompts for unknown superclasses {sorted(set(prompts) - set(registry))}")
    return DatasetKnowledge(
        name=str(data["name"]),
        title=str(data.get("title", data["name"])),
        layout=str(data["layout"]),
        labels=labels,
        product_labels=product_labels,
        multi_defect_labels=multi,
        mask_id_table=mask_table,
        multiads_prompts=prompts,
        source=str(path),
    )


def _as_knowledge(dataset: str | Path | DatasetKnowledge) -> DatasetKnowledge:
    return dataset if isinstance(dataset, DatasetKnowledge) else load_knowledge(dataset)


def defect_words(superclass: str) -> str:
    """Literal words of ``superclass`` in DAPO's abnormal prompt, e.g. ``"faulty imprint"``."""
    return _defect(superclass).words


def multiads_state_prompts(superclass: str, dataset: str | DatasetKnowledge | None = None) -> list[str]:
    """MultiADS handcrafted state phrases of ``superclass`` (``"{}"`` = product name).

    With ``dataset``, that dataset's own wording (its appendix table) where it differs.
    """
    if dataset is not None:
        knowledge = _as_knowledge(dataset)
        if superclass in knowledge.multiads_prompts:
            return list(knowledge.multiads_prompts[superclass])
    return list(_defect(superclass).multiads)


def multiads_templates() -> list[str]:
    """The 35 MultiADS text templates (``"{}"`` = a state phrase filled with a product)."""
    return list(_shared()["templates"])


def normal_state_prompts() -> list[str]:
    """MultiADS normal-state phrases (``"{}"`` = product name)."""
    return list(_shared()["normal"])


def seen_unseen(
    target_dataset: str | DatasetKnowledge, train_dataset: str | DatasetKnowledge
) -> dict[str, bool]:
    """For each superclass of the target dataset: was it seen when training on ``train_dataset``?

    Seen means the training dataset has the same superclass, or one listed in its
    ``same_as`` synonyms. Multi-defect superclasses of the training set (``combined``) do
    not count: MultiADS and DAPO drop those images from training.
    """
    target, train = _as_knowledge(target_dataset), _as_knowledge(train_dataset)
    trained = set(train.superclasses) - train.multi_defect_superclasses
    return {superclass: bool(trained & _synonyms(superclass)) for superclass in target.superclasses}


def _synonyms(superclass: str) -> set[str]:
    """``superclass`` with its ``same_as`` entries, in both directions."""
    registry = _defect_registry()
    named_by_others = {name for name, info in registry.items() if superclass in info.same_as}
    return {superclass, *_defect(superclass).same_as, *named_by_others}
