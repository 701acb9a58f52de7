"""ember.data: data sets by name, pinned sources, splits, fingerprints, fast loaders, augmentation.

Image data is float32 ``(N, C, H, W)`` in ``[0, 1]`` (not standardized); tables float32 ``(N, F)``;
labels int64 (classification) or float32 (regression). See `ember.data.bundle`.

Example:
    >>> from ember.data import load_dataset, split_indices, TensorLoader
    >>> bundle = load_dataset("digits")
    >>> parts = split_indices(bundle.train.y.numpy(), len(bundle.train), val_fraction=0.1,
    ...                       test_fraction=0.1, seed=0, stratified=True)
    >>> loader = TensorLoader(bundle.train.subset(parts["train"]), batch_size=64, shuffle=True)
"""

from ember.data import brown as _brown  # noqa: F401  (registers "brown", "brown-genre")
from ember.data import catalog as _catalog  # noqa: F401  (adds the pinned sources)
from ember.data import csv_table as _csv_table  # noqa: F401  (registers "csv")
from ember.data import image_folder as _image_folder  # noqa: F401  (registers "image-folder")
from ember.data import npz_arrays as _npz_arrays  # noqa: F401  (registers "npz")
from ember.data import parallel as _parallel  # noqa: F401  (registers "en-es-verses")
from ember.data import scenes as _scenes  # noqa: F401  (registers "digit-scenes", "digit-segments")
from ember.data import text as _text  # noqa: F401  (registers "shakespeare", "python-code", "text", "jsonl")
from ember.data import text_classes as _text_classes  # noqa: F401  (registers "text-classes")
from ember.data import uci_tables as _uci_tables  # noqa: F401  (registers "adult", "compas", "german")
from ember.data import verses as _verses  # noqa: F401  (adds the "en-es-verses" source)
from ember.data import wmt17 as _wmt17  # noqa: F401  (adds the "wmt17-bleu" source)
from ember.data.augment import (
    AUGMENTS,
    Compose,
    CutMix,
    Cutout,
    Mixup,
    RandomCrop,
    RandomFlip,
    build_augment,
)
from ember.data.bundle import ArrayData, DataBundle, DataError
from ember.data.csv_table import EncodedTable, TableBundle, table_bundle
from ember.data.datasets import list_datasets, load_dataset, register_dataset, registry
from ember.data.fingerprint import fingerprint, fingerprint_dataset, fingerprint_indices
from ember.data.loader import (
    SeededDataLoader,
    TensorLoader,
    batch_generator,
    epoch_permutation,
    make_loader,
)
from ember.data.sources import (
    SOURCES,
    ChecksumError,
    Mirror,
    Source,
    SourceUnavailableError,
    available_sources,
    cache_dir,
    fetch,
)
from ember.data.splits import load_splits, save_splits, split_groups, split_indices
from ember.data.table import Table, read_table
from ember.data.tabular import RowEncoder

__all__ = [
    "AUGMENTS",
    "SOURCES",
    "ArrayData",
    "ChecksumError",
    "Compose",
    "CutMix",
    "Cutout",
    "DataBundle",
    "DataError",
    "EncodedTable",
    "Mirror",
    "Mixup",
    "RandomCrop",
    "RandomFlip",
    "RowEncoder",
    "SeededDataLoader",
    "Source",
    "SourceUnavailableError",
    "Table",
    "TableBundle",
    "TensorLoader",
    "available_sources",
    "batch_generator",
    "build_augment",
    "cache_dir",
    "epoch_permutation",
    "fetch",
    "fingerprint",
    "fingerprint_dataset",
    "fingerprint_indices",
    "list_datasets",
    "load_dataset",
    "load_splits",
    "make_loader",
    "read_table",
    "register_dataset",
    "registry",
    "save_splits",
    "split_groups",
    "split_indices",
    "table_bundle",
]
