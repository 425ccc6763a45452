"""The checks and reports the CLI leaves to the library (issue 20, "a thin CLI"), held at the
library's own surface: a script calling the library gets the same checks, naming the same
option, and the same report lines as the command prints (the commands' output itself is pinned
by the CLI tests)."""

from __future__ import annotations

import pytest

from stemforge.core.config import PRESETS, SpectrogramConfig, requested_geometry
from stemforge.core.errors import ConfigMismatchError, OptionError


def test_requested_geometry_is_none_without_options_and_names_the_bad_option():
    assert requested_geometry() is None
    assert requested_geometry(None, sample_rate=None, n_fft=None) is None
    assert requested_geometry("paper") == PRESETS["paper"].spectrogram
    assert requested_geometry(sample_rate=22050) == SpectrogramConfig(sample_rate=22050)  # the seed preset's other values
    with pytest.raises(OptionError) as info:
        requested_geometry("bogus")
    assert info.value.option == "preset" and "seed, paper, fullband" in info.value.reason
    with pytest.raises(OptionError) as info:
        requested_geometry(hop_length=4096)
    assert info.value.option == "hop_length" and "larger than n_fft 1024" in info.value.reason


def test_train_values_are_checked_one_at_a_time_naming_the_option():
    from stemforge.train.config import check_values

    check_values({"batch_size": 4}, {"width": 0.25}, 2.0, "cpu")  # all good: no error
    cases = [
        (({"batch_size": 0}, {}, None, "cpu"), "batch_size"),
        (({}, {}, -1.0, "cpu"), "epochs"),
        (({}, {}, None, "tpu"), "device"),
        (({}, {"width": 0.0}, None, "cpu"), "width"),
        (({"lr": -1.0}, {"width": 0.0}, None, "tpu"), "lr"),  # the TrainConfig fields first
    ]
    for args, option in cases:
        with pytest.raises(OptionError) as info:
            check_values(*args)
        assert info.value.option == option, (args, info.value)


def test_open_for_ingest_refuses_another_geometry_before_reading_the_corpus(tmp_path):
    from stemforge.ingest.engine import open_for_ingest
    from stemforge.store import DataDir
    from stemforge.store.datadir import META_NAME

    read = []

    def discover():
        read.append(True)
        return []

    DataDir.create(tmp_path / "d", SpectrogramConfig())
    with pytest.raises(ConfigMismatchError):
        open_for_ingest(tmp_path / "d", PRESETS["paper"].spectrogram, discover)
    assert read == []
    datadir, sources = open_for_ingest(tmp_path / "d", None, discover)  # no geometry asked: the DataDir's own
    assert datadir.config == SpectrogramConfig() and sources == [] and read == [True]

    def broken():
        raise RuntimeError("corpus unreadable")

    with pytest.raises(RuntimeError):
        open_for_ingest(tmp_path / "new", None, broken)
    assert not (tmp_path / "new" / META_NAME).exists()  # nothing created for a corpus that could not be read


def test_augment_estimate_warns_of_heavy_reuse_only_past_the_threshold():
    from stemforge.augment.remix import REUSE_WARNING, AugmentEstimate

    def estimate(source_s: float) -> AugmentEstimate:
        return AugmentEstimate(
            remixes=100, planned=100, segment_s=10.0, bytes=2 * 10**8, margin_bytes=0, free_bytes=10**10,
            vocal_sources=4, accompaniment_sources=4, vocal_source_s=source_s, accompaniment_source_s=source_s,
            vocal_uses=25.0, accompaniment_uses=25.0,
        )

    light = estimate(100 * 10.0 / (REUSE_WARNING / 2))  # each second in REUSE_WARNING / 2 remixes
    heavy = estimate(100 * 10.0 / (REUSE_WARNING * 2))
    assert len(light.lines()) == 2 and not any(line.startswith("warning:") for line in light.lines())
    assert heavy.lines()[-1].startswith("warning: each second of source audio goes into about 20 remixes")
    assert "about 0.20 GB, with 10.00 GB free" in light.lines()[0]
