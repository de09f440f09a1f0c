"""Datasets in their official layouts, the defect knowledge base, the layout writer, statistics.

Entry points: :func:`open_dataset` (any dataset by name), :func:`collate_samples` (batching),
:func:`read_rgb` / :func:`read_label_map` (file decoding, every PIL mode converted or refused),
:func:`load_knowledge` and friends (the knowledge base), :func:`write_tree` (fixture and
synthetic-world writer), :func:`product_statistics` / :func:`summary_statistics`.
"""

from dapo.data.base import (
    AnomalyDataset,
    DatasetRootError,
    EmptyProductError,
    MaskSizeMismatchError,
    MissingMaskError,
    Record,
    collate_samples,
)
from dapo.data.btad import BTAD
from dapo.data.dagm import DAGM
from dapo.data.dtd_synthetic import DTDSynthetic
from dapo.data.images import (
    CLIP_MEAN,
    CLIP_STD,
    CorruptImageError,
    ImageConversionWarning,
    SuspiciousMaskWarning,
    UnsupportedImageError,
    read_label_map,
    read_rgb,
)
from dapo.data.knowledge import (
    DatasetKnowledge,
    UnknownDefectError,
    available_datasets,
    defect_words,
    load_knowledge,
    multiads_state_prompts,
    multiads_templates,
    normal_state_prompts,
    seen_unseen,
)
from dapo.data.ksdd import KSDD
from dapo.data.layouts import LAYOUTS, LayoutImage, write_tree
from dapo.data.mad import MADReal, MADSim
from dapo.data.mpdd import MPDD
from dapo.data.mvtec import MVTecAD
from dapo.data.real_iad import RealIAD
from dapo.data.registry import LOADERS, open_dataset
from dapo.data.stats import defect_counts, product_statistics, summary_statistics
from dapo.data.visa import VisA

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "LAYOUTS",
    "LOADERS",
    "AnomalyDataset",
    "BTAD",
    "CorruptImageError",
    "DAGM",
    "DTDSynthetic",
    "DatasetKnowledge",
    "DatasetRootError",
    "EmptyProductError",
    "ImageConversionWarning",
    "KSDD",
    "LayoutImage",
    "MADReal",
    "MADSim",
    "MPDD",
    "MVTecAD",
    "MaskSizeMismatchError",
    "MissingMaskError",
    "RealIAD",
    "SuspiciousMaskWarning",
    "Record",
    "UnknownDefectError",
    "UnsupportedImageError",
    "VisA",
    "available_datasets",
    "collate_samples",
    "defect_counts",
    "defect_words",
    "load_knowledge",
    "multiads_state_prompts",
    "multiads_templates",
    "normal_state_prompts",
    "open_dataset",
    "product_statistics",
    "read_label_map",
    "read_rgb",
    "seen_unseen",
    "summary_statistics",
    "write_tree",
]
