"""The DataDir contract: manifest schema, HDF5 shards, locking, atomic writes."""

from stemforge.store.datadir import DataDir
from stemforge.store.manifest import COLUMNS, read_manifest, write_manifest
from stemforge.store.shards import ShardReader, ShardWriter, TrackArrays

__all__ = ["DataDir", "COLUMNS", "read_manifest", "write_manifest", "ShardReader", "ShardWriter", "TrackArrays"]
