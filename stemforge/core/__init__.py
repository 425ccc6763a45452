"""The ground floor: typed errors, the spectrogram config, audio I/O and the one STFT.

Nothing here imports anything above it (``tests/unit/contracts/test_layers.py`` holds that):

* :mod:`.errors`: the typed errors every layer raises (the CLI maps them to exit codes);
* :mod:`.config`: :class:`~stemforge.core.config.SpectrogramConfig`, frozen, with a stable hash;
* :mod:`.audio`: decoding (whole, blockwise, every stream of a container), resampling, writing;
* :mod:`.dsp`: the framed STFT/iSTFT and the features computed from it;
* :mod:`.parallel`: an ordered, bounded map over worker processes;
* :mod:`.lifeline`: worker processes that die with their command (SIGKILL included), and
  SIGTERM as an interruption (:mod:`.forkserver_lifeline` is what the fork server preloads);
* :mod:`.device`: the torch device a process uses (torch imported only when called).
"""
