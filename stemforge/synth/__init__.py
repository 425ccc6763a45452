"""A procedural corpus: synthetic songs written in the on-disk layout of each real corpus."""
