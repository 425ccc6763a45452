"""Original/karaoke pairs: alignment (offset, gain, score) and derived vocals (:mod:`.align`)."""
