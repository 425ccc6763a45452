"""Checkpoint + song -> vocals and accompaniment: the :class:`~stemforge.separate.separator.Separator`."""
