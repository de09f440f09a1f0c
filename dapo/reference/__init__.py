"""The papers' own numbers, as data, to show beside reproduced numbers.

Every number printed in the result tables of DAPO (Tables 1-4, 6-14), in the MultiADS
tables DAPO compares against (MultiADS Tables 1-5) and in ViP²-CLIP's industrial comparison
(ViP²-CLIP Table 1) is one row of a tidy CSV in this package, exactly as printed (in percent);
so are the cost tables of FAPrompt (appendix Table 3) and ViP²-CLIP (Table 3), whose metrics
(:data:`EFFICIENCY_METRICS`) carry their unit in the name (``train_ms_per_batch``,
``parameters_m``) and whose printed ``±`` is a metric of its own (``*_pm``). These are *reported* numbers, never measured here: every
frame returned carries ``profile == PAPER_LABEL`` and ``attrs["label"] == PAPER_LABEL``.

Columns (``SCHEMA``): ``table`` ("DAPO Table 8"), ``source_paper`` (the paper that prints
the table), ``task``, ``train_dataset``, ``dataset`` (keys of :data:`DATASETS`), ``product``
(dataset folder name, or ``"mean"`` for a dataset-level figure), ``defect`` (knowledge-base
superclass, ``""`` when the row is not per defect; the normal class is ``"normal"``), ``seen``
(``False`` for defects marked unseen in training, ``True`` for those marked seen, ``<NA>``
when the table marks nothing), ``method``, ``metric`` (one of :data:`METRICS`), ``value`` and
``notes`` (where a value is ambiguous or disagrees with another table). The loader adds
``decimals`` (digits printed after the point) and ``profile``.

Conventions and choices:

- Cells printed as ``-`` (not reported) have no row. Bold and underline marks are not
  recoverable from the plain-text copies of the papers and are not stored.
- Product names are the datasets' folder names (``pipe_fryum``, ``transistor1``); MAD
  products drop the numeric folder prefix (``gorilla``). ``products.csv`` maps them to
  the names the papers print and lists every dataset's products (MultiADS Tables 12-17).
- DAPO Tables 13-14 print defect-wise figures without saying how they aggregate over
  products; they are stored with ``product == "mean"``.
- Binary tables store the image F1-max the papers print as ``image_f1`` and AUPRO as ``pixel_aupro``
  (both computed with the authors' scripts: ``image_f1_max`` and ``pixel_aupro_official`` in
  :mod:`dapo.metrics`); ``pixel_f1`` is the multi-type macro F1 of the argmax (DAPO, MultiADS),
  ``pixel_f1_max`` a binary map's F1-max (ViP²-CLIP Table 1).
- ViP²-CLIP Table 1 prints an AVERAGE over its seven datasets: stored as dataset ``"mean"``.
- DAPO Table 5 (dataset statistics) and MultiADS Table 11 are counts, not percentages:
  :func:`dataset_statistics`.

Not transcribed: DAPO Figures 4-10 (ROC curves, confusion matrices, ablations over lambda,
prompt length, initialisation, prefix depth N_d and t-SNE) give their values only as plots;
numbers quoted only in DAPO's prose (abstract, Sec. 6); the MultiADS few-shot and backbone
tables (18-30) and prompt tables (6-10), which hold no zero-shot result DAPO compares against.
MultiADS Tables 11-17 (dataset statistics) feed :func:`dataset_statistics` and ``products.csv``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import pandas as pd

PAPER_LABEL = "paper (reported)"
DATA_DIR = Path(__file__).resolve().parent

SCHEMA = ("table", "source_paper", "task", "train_dataset", "dataset", "product", "defect", "seen",
          "method", "metric", "value", "notes")
KEY = SCHEMA[:10]
SOURCES = ("DAPO", "MultiADS", "FAPrompt", "ViP²-CLIP")
DATASETS = ("mvtec", "visa", "mpdd", "mad_sim", "mad_real", "real_iad", "internal")
DATASETS += ("btad", "ksdd", "dagm", "dtd_synthetic", "mean")  # ViP²-CLIP Table 1 ("mean": its AVERAGE row)
PERCENT_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1", "pixel_aupro", "image_auroc", "image_ap", "image_f1",
                   "multilabel_precision", "multilabel_recall", "multilabel_f1", "delta_ap")
PERCENT_METRICS += ("pixel_f1_max",)  # ViP²-CLIP Table 1: the binary map's F1-max (pixel_f1: multi-type argmax F1)
#: Cost metrics (FAPrompt and ViP²-CLIP Table 3), unit in the name; ``*_pm``: the printed ± of the one before.
EFFICIENCY_METRICS = ("parameters", "parameters_m", "train_ms_per_batch", "train_ms_per_batch_pm", "train_hours",
                      "inference_ms_per_image", "inference_ms_per_image_pm", "gpu_memory_gb")
METRICS = PERCENT_METRICS + EFFICIENCY_METRICS
TABLES_FILE = "tables.csv"

Filter = str | Iterable[str] | None


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"paper reference file missing: {path}")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _parse_numbers(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check one transcription file against the schema and convert its value and seen columns."""
    if tuple(raw.columns) != SCHEMA:
        raise ValueError(f"{path.name}: columns {list(raw.columns)} differ from the schema {list(SCHEMA)}")
    values = pd.to_numeric(raw["value"], errors="coerce")
    if values.isna().any():
        bad = raw.loc[values.isna(), "value"].tolist()
        raise ValueError(f"{path.name}: values that are not numbers: {bad}")
    bad_seen = sorted(set(raw["seen"]) - {"True", "False", ""})
    if bad_seen:
        raise ValueError(f"{path.name}: seen must be True, False or empty, got {bad_seen}")
    df = raw.copy()
    df["decimals"] = raw["value"].map(_decimals)
    df["value"] = values.astype(float)
    df["seen"] = raw["seen"].map({"True": True, "False": False, "": pd.NA}).astype("boolean")
    return df


@lru_cache(maxsize=1)
def _catalogue() -> pd.DataFrame:
    return _read_csv(DATA_DIR / TABLES_FILE)


@lru_cache(maxsize=1)
def _all_numbers() -> pd.DataFrame:
    frames = []
    for entry in _catalogue().itertuples(index=False):
        path = DATA_DIR / entry.file
        df = _parse_numbers(_read_csv(path), path)
        if set(df["table"]) != {entry.table}:
            raise ValueError(f"{path.name}: holds tables {sorted(set(df['table']))}, catalogue says {entry.table!r}")
        frames.append(df)
    numbers = pd.concat(frames, ignore_index=True)
    numbers["profile"] = PAPER_LABEL
    return numbers


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    df.attrs["label"] = PAPER_LABEL
    return df


def _select(df: pd.DataFrame, column: str, wanted: Filter) -> pd.DataFrame:
    if wanted is None:
        return df
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    known = set(_all_numbers()[column])
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"unknown {column} {unknown}; known: {sorted(known)}")
    return df[df[column].isin(wanted)]


def paper_numbers(table: Filter = None, *, source: Filter = None, task: Filter = None, dataset: Filter = None,
                  method: Filter = None, metric: Filter = None, product: Filter = None,
                  defect: Filter = None) -> pd.DataFrame:
    """Reported numbers as a tidy frame (one row per printed number), filtered.

    Each filter takes one value or several; an unknown value raises ``ValueError`` listing
    the known ones. ``source`` filters on ``source_paper``.
    """
    df = _all_numbers()
    for column, wanted in (("table", table), ("source_paper", source), ("task", task), ("dataset", dataset),
                           ("method", method), ("metric", metric), ("product", product), ("defect", defect)):
        df = _select(df, column, wanted)
    return _labelled(df.reset_index(drop=True).copy())


def available_tables() -> pd.DataFrame:
    """One row per transcribed table: table, source_paper, task, description, notes, rows."""
    counts = _all_numbers().groupby("table", sort=False).size().rename("rows")
    cat = _catalogue().join(counts, on="table")
    return _labelled(cat[["table", "source_paper", "task", "description", "notes", "rows"]].copy())


def _in_printed_order(labels: pd.DataFrame) -> pd.MultiIndex | pd.Index:
    """Unique label tuples in order of first appearance (the CSVs keep the printed order)."""
    unique = labels.drop_duplicates()
    if unique.shape[1] == 1:
        return pd.Index(unique.iloc[:, 0], name=unique.columns[0])
    return pd.MultiIndex.from_frame(unique)


def paper_table(table: str) -> pd.DataFrame:
    """One table pivoted as the paper prints it (rows x columns, printed order), labelled as reported."""
    cat = _catalogue().set_index("table")
    if table not in cat.index:
        raise ValueError(f"unknown table {table!r}; available: {list(cat.index)}")
    index = cat.at[table, "index"].split(",")
    columns = cat.at[table, "columns"].split(",")
    df = paper_numbers(table)
    df["seen"] = df["seen"].map({True: "seen", False: "unseen"}).fillna("")
    wide = df.set_index(index + columns)["value"].unstack(columns)
    wide = wide.reindex(index=_in_printed_order(df[index]), columns=_in_printed_order(df[columns]))
    wide.attrs["label"] = PAPER_LABEL
    wide.attrs["caption"] = f"{table}: {cat.at[table, 'description']} [{PAPER_LABEL}]"
    return wide


def side_by_side(reproduced: pd.DataFrame, table: str, *, on: Sequence[str] = ("dataset", "product", "metric"),
                 reproduced_label: str = "reproduced", **filters: Filter) -> pd.DataFrame:
    """Reproduced numbers (tidy, a ``value`` column in percent) next to the paper's, matched on ``on``.

    ``filters`` go to :func:`paper_numbers` (e.g. ``method="DAPO"``); they must leave one paper
    number per key. The result has the ``on`` columns, ``reproduced_label`` and :data:`PAPER_LABEL`.
    """
    on = list(on)
    missing = [c for c in on + ["value"] if c not in reproduced.columns]
    if missing:
        raise ValueError(f"reproduced frame lacks columns {missing}")
    paper = paper_numbers(table, **filters)
    duplicated = paper.duplicated(on)
    if duplicated.any():
        raise ValueError(f"{table}: several paper numbers per key {on}, e.g. "
                         f"{paper.loc[duplicated, on].iloc[0].tolist()}; add filters (method=..., defect=...)")
    left = reproduced[on + ["value"]].rename(columns={"value": reproduced_label})
    right = paper[on + ["value"]].rename(columns={"value": PAPER_LABEL})
    return _labelled(left.merge(right, on=on, how="outer"))


def dataset_statistics(source: Filter = None) -> pd.DataFrame:
    """DAPO Table 5 and MultiADS Table 11: products, normal and anomalous image counts per dataset."""
    df = _read_csv(DATA_DIR / "dataset_statistics.csv")
    for column in ("n_products", "n_normal", "n_anomalous"):
        df[column] = df[column].astype(int)
    if source is not None:
        df = df[df["source_paper"].isin([source] if isinstance(source, str) else list(source))]
    df["profile"] = PAPER_LABEL
    return _labelled(df.reset_index(drop=True))


def paper_products(dataset: str | None = None) -> pd.DataFrame:
    """Every dataset's products as the papers list them: dataset, product (folder name), name_in_paper."""
    df = _read_csv(DATA_DIR / "products.csv")
    if dataset is not None:
        if dataset not in set(df["dataset"]):
            raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(set(df['dataset']))}")
        df = df[df["dataset"] == dataset]
    return df.reset_index(drop=True)


__all__ = ["PAPER_LABEL", "SCHEMA", "DATASETS", "METRICS", "PERCENT_METRICS", "EFFICIENCY_METRICS", "available_tables", "dataset_statistics",
           "paper_numbers", "paper_products", "paper_table", "side_by_side"]
