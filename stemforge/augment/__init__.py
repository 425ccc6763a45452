"""DataDir -> DataDir: cross-song remixes that grow the train split (:mod:`.remix`)."""
