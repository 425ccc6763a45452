"""Corpus -> DataDir: a recipe's TrackSources become normalized magnitudes in shards.

* :mod:`.engine`: decoding, STFT, normalization, shards and manifest rows (resumable);
* :mod:`.reconcile`: one song across corpora (aliases, strictest split, duplicates).
"""
