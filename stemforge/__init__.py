"""stemforge: turn singing-voice corpora into training data, train a U-Net, separate songs.

The stable programmatic surface is re-exported lazily here so that ``import stemforge``
stays cheap (no torch, no librosa until needed).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
