"""Data layer: datasets (registry, formats, folders, downloads), the on-disk cache, devices, the
memory guard.

The bottom layer of the library: it imports nothing else from golddiff.
"""

from .cache import CacheRebuiltWarning, atomic_write, cache_dir, cached_arrays, fingerprint
from .datasets import Dataset, to_uint8, to_unit_range
from .device import device_label, pick_device
from .download import data_roots
from .memory import check_memory, format_bytes, set_max_memory
from .registry import (
    DATASETS,
    REGISTRY,
    dataset_names,
    dataset_status,
    describe_datasets,
    image_datasets,
    load_dataset,
)

__all__ = [
    "CacheRebuiltWarning",
    "DATASETS",
    "Dataset",
    "REGISTRY",
    "atomic_write",
    "cache_dir",
    "cached_arrays",
    "check_memory",
    "data_roots",
    "dataset_names",
    "dataset_status",
    "describe_datasets",
    "device_label",
    "fingerprint",
    "format_bytes",
    "image_datasets",
    "load_dataset",
    "pick_device",
    "set_max_memory",
    "to_uint8",
    "to_unit_range",
]
