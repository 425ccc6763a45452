"""Separation quality: BSS Eval on a DataDir's references (:mod:`.datadir`) and its figures
(:mod:`.plots`)."""
