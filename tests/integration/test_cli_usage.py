"""The CLI's contract with its user: usage errors exit 2 before anything is opened, help shows
values and plain names, outputs are named after the song and stay under OUTDIR, and a DataDir
without a valid split is reported loudly with what to do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.main import get_command
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core.errors import OutputPathError
from stemforge.separate.naming import check_template, output_paths, track_name


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEMFORGE_DATA", raising=False)
    return tmp_path


def _commands() -> list[list[str]]:
    root = get_command(app)
    out = []
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        out += [[name, sub] for sub in subs] if subs else [[name]]
    return out


# -- item 5: argument errors exit 2 before anything is opened -------------------------------

USAGE_ERRORS = [
    ["augment", "--hours", "-1"],
    ["augment", "--hours", "nan"],
    ["augment", "--hours", "2", "--segment-seconds", "0"],
    ["augment", "--hours", "2", "--min-vocal-activity", "2"],
    ["augment", "--hours", "2", "--pitch-semitones", "20"],
    ["augment", "--hours", "2", "--vocal-gain-db", "3,-3"],
    ["augment", "--hours", "2", "--seed", "-1"],
    ["augment", "--hours", "2", "--workers", "-2"],
    ["ingest", "medleydb", "corpus", "--valid-fraction", "1.5"],
    ["ingest", "medleydb", "corpus", "--valid-fraction", "0.5", "--test-fraction", "0.5"],
    ["ingest", "medleydb", "corpus", "--voices", "robots"],
    ["ingest", "medleydb", "corpus", "--mixture", "mp3"],
    ["ingest", "medleydb", "corpus", "--versions", "V9"],
    ["ingest", "ikala", "corpus", "--test-fraction", "-0.1"],
    ["ingest", "mir1k", "corpus", "--unit", "bars"],
    ["ingest", "mir1k", "corpus", "--split-rule", "coin"],
    ["ingest", "ccmixter", "corpus", "--valid-fraction", "1"],
    ["ingest", "musdb", "corpus", "--format", "ogg"],
    ["ingest", "dsd100", "corpus", "--workers", "-1"],
    ["ingest", "csv", "list.csv", "--name", "my songs"],
    ["ingest", "csv", "list.csv", "--length-tolerance", "-5"],
    ["ingest", "pairs", "pairs.csv", "--min-score", "1.5"],
    ["ingest", "pairs", "pairs.csv", "--max-offset", "0"],
    ["evaluate", "model.pt", "--split", "dev"],
    ["evaluate", "model.pt", "--limit", "0"],
    ["evaluate", "model.pt", "--device", "gpu"],
    ["evaluate", "model.pt", "--threads", "-1"],
    ["separate", "model.pt", "song.wav", "--filename", "../{stem}.{ext}"],
    ["separate", "model.pt", "song.wav", "--filename", "/tmp/{track}/{stem}.{ext}"],
    ["separate", "model.pt", "song.wav", "--filename", "{track}.wav"],
    ["separate", "model.pt", "song.wav", "--filename", "{name}/{stem}.{ext}"],
    ["separate", "model.pt", "song.wav", "--format", "ogg"],
    ["separate", "model.pt", "song.wav", "--threads", "-1"],
    ["serve", "model.pt", "--device", "gpu"],
    ["serve", "model.pt", "--port", "70000"],
    ["serve", "model.pt", "--max-rate", "4000"],
    ["serve", "model.pt", "--max-channels", "3"],
    ["synth", "out", "--layout", "nope"],
    ["synth", "out", "--layout", "dsd100", "--track-id", "X"],
    ["synth", "out", "--layout", "medleydb", "--track-id", "X"],
    ["derive-vocals", "orig.wav", "karaoke.wav", "--min-score", "-0.1"],
    ["derive-vocals", "orig.wav", "karaoke.wav", "--max-offset", "0"],
    ["import-chainer", "unet.model", "-o", "model.pt", "--target", "drums"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda a: " ".join(a))
def test_argument_errors_exit_2_before_anything_is_opened(cwd, argv):
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, r.output
    # checked before the DataDir lookup (which announces itself) and before any file is read
    assert "DataDir:" not in r.output
    assert "Error:" in r.output or "error:" in r.output
    assert not any(cwd.iterdir()), "a usage error created files"


def test_augment_negative_hours_names_the_option(cwd):
    r = CliRunner().invoke(app, ["augment", "--hours", "-1"])
    assert r.exit_code == 2 and "--hours" in r.output and "non-negative" in r.output


# -- item 6: help shows values and plain names ----------------------------------------------


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a))
def test_usage_lines_use_plain_names(argv):
    r = CliRunner().invoke(app, argv + ["--help"])
    assert r.exit_code == 0
    usage = r.output.splitlines()[0]
    assert usage.startswith("Usage: stemforge ")
    assert "{" not in usage and "[[" not in usage, usage
    # arguments in capitals after [OPTIONS]: MODEL, [DATA], AUDIO...
    for word in usage.split("[OPTIONS]", 1)[1].split():
        assert re.fullmatch(r"\[?[A-Z_]+\]?(\.\.\.)?", word), usage


def test_usage_lines_read_as_users_type_them():
    runner = CliRunner()
    first = lambda argv: runner.invoke(app, argv + ["--help"]).output.splitlines()[0]  # noqa: E731
    assert first(["derive-vocals"]) == "Usage: stemforge derive-vocals [OPTIONS] ORIGINAL KARAOKE"
    assert first(["synth"]) == "Usage: stemforge synth [OPTIONS] OUT"
    assert first(["info"]) == "Usage: stemforge info [OPTIONS] [DATA]"
    assert first(["separate"]) == "Usage: stemforge separate [OPTIONS] MODEL AUDIO..."


@pytest.mark.parametrize("argv", [["derive-vocals"], ["ingest", "pairs"]])
def test_min_score_help_shows_its_value(argv):
    from stemforge.karaoke.align import MIN_SCORE

    text = " ".join(CliRunner().invoke(app, argv + ["--help"]).output.split())
    assert f"default: {MIN_SCORE}" in text and "stemforge." not in text.split("Options:")[1]


def test_help_defaults_are_the_library_values():
    from stemforge.cli import common, ingest, synth
    from stemforge.karaoke.align import MIN_SCORE
    from stemforge.recipes import ccmixter, csv, ikala, karaoke, medleydb, mir1k
    from stemforge.synth import LAYOUTS

    assert common.MIN_SCORE == MIN_SCORE
    assert set(synth.LAYOUT_NAMES) == set(LAYOUTS)
    for recipe in (ccmixter, csv, ikala, karaoke, medleydb, mir1k):
        assert (recipe.VALID_FRACTION, recipe.TEST_FRACTION) == (ingest.VALID_FRACTION, ingest.TEST_FRACTION), recipe


def test_fraction_options_on_every_corpus_without_an_official_split():
    from stemforge.cli.ingest import OFFICIAL_SPLITS

    root = get_command(app).commands["ingest"]
    for name, cmd in root.commands.items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        has = {"--valid-fraction", "--test-fraction"} <= opts
        assert has == (name not in OFFICIAL_SPLITS), name
    text = " ".join(CliRunner().invoke(app, ["ingest", "--help"]).output.split())
    assert "dsd100 and musdb follow their official lists" in text


# -- item 7 and issue 16 item 3: output naming, outputs only under OUTDIR --------------------


def test_track_name_of_generic_file_names_is_the_folder(tmp_path):
    assert track_name(Path("Artist - Title/mixture.wav")) == "Artist - Title"
    assert track_name(Path("corpus/Song A/mix.wav")) == "Song A"
    assert track_name(Path("pairs/Song B/Original.flac")) == "Song B"
    assert track_name(Path("x/My Song.mp3")) == "My Song"
    assert track_name(Path("Artist - Title.stem.mp4")) == "Artist - Title"
    # relative to the working folder: the folder's own name
    assert track_name(Path("mixture.wav")) == Path.cwd().name


def test_output_paths_stay_under_outdir(tmp_path):
    out = tmp_path / "sep"
    paths = output_paths(out, "{track}/{stem}.{ext}", Path("A - B/mixture.wav"), ("vocals", "accompaniment"), "wav")
    assert paths == {"vocals": out / "A - B" / "vocals.wav", "accompaniment": out / "A - B" / "accompaniment.wav"}
    for template in ("../{track}/{stem}.{ext}", "{track}/../../{stem}.{ext}", "/abs/{stem}.{ext}", "{track}.{ext}"):
        with pytest.raises(OutputPathError):
            check_template(template)
    for name in ("...wav", "..wav"):  # {track} would be '..' or '.'
        with pytest.raises(OutputPathError, match=re.escape(name)):
            output_paths(out, "{track}_{stem}.{ext}", tmp_path / name, ("vocals",), "wav")
    # a symbolic link inside OUTDIR that points outside it
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "tune").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputPathError, match="outside"):
        output_paths(out, "{track}/{stem}.{ext}", tmp_path / "tune.wav", ("vocals",), "wav")


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    import torch

    from stemforge.core.config import SpectrogramConfig
    from stemforge.model.checkpoint import save_checkpoint
    from stemforge.model import UNet, UNetConfig

    cfg = UNetConfig(width=0.125)
    model = UNet(cfg, generator=torch.Generator().manual_seed(1))
    return Path(save_checkpoint(tmp_path / "model.pt", model, cfg, SpectrogramConfig(), "vocals", 0))


def _song(path: Path, seconds: float = 1.0, sample_rate: int = 22050) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal((int(seconds * sample_rate), 2))).astype(np.float32), sample_rate, format="WAV")
    return path


def test_separate_names_musdb_style_folders_and_never_writes_outside(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = _song(tmp_path / "corpus" / "Artist A - Song 1" / "mixture.wav")
    b = _song(tmp_path / "corpus" / "Artist B - Song 2" / "mixture.wav")
    dots = _song(tmp_path / "corpus" / "...wav")
    before = set(tmp_path.rglob("*"))
    r = CliRunner().invoke(
        app, ["separate", str(tiny_checkpoint), str(a), str(b), str(dots), "-o", "sep", "--filename", "{track}/{stem}.{ext}"]
    )
    assert r.exit_code == 1, r.output  # two separated, the dotted name refused
    sep = tmp_path / "sep"
    assert (sep / "Artist A - Song 1" / "vocals.wav").is_file()
    assert (sep / "Artist B - Song 2" / "accompaniment.wav").is_file()
    assert "...wav" in r.output and "track name '..'" in r.output
    new = set(tmp_path.rglob("*")) - before
    assert new and all(p == sep or sep in p.parents for p in new), sorted(map(str, new))


# -- item 3: no valid split: ingest warns, evaluate says which splits exist -----------------


@pytest.fixture(scope="module")
def medleydb_three(tmp_path_factory) -> Path:
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("med") / "MedleyDB"
    write_corpus(root, "medleydb", 3, 2.0, 0)
    return root


def test_ingest_warns_when_no_valid_split_and_its_advice_works(tmp_path, medleydb_three):
    data = tmp_path / "data"
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", "medleydb", str(medleydb_three), "--out", str(data), "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "NO VALID SPLIT" in r.output and "train 3, valid 0" in r.output
    advice = re.search(r"--valid-fraction ([0-9.]+) --force puts (\d+) of these 3 songs in valid", r.output)
    assert advice, r.output
    r = runner.invoke(
        app, ["ingest", "medleydb", str(medleydb_three), "--out", str(data), "-j", "1", "--valid-fraction", advice[1], "--force"]
    )
    assert r.exit_code == 0, r.output
    assert "NO VALID SPLIT" not in r.output
    assert re.search(rf"^valid\s+{advice[2]}\s", r.output, re.M), r.output


def test_evaluate_on_a_missing_split_names_the_splits_and_the_option(tmp_path, medleydb_three):
    from stemforge.evaluate.datadir import evaluate_datadir
    from stemforge.store import DataDir

    data = tmp_path / "data"
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "medleydb", str(medleydb_three), "--out", str(data), "-j", "1"]).exit_code == 0
    r = runner.invoke(app, ["evaluate", str(tmp_path / "model.pt"), str(data)])
    assert r.exit_code == 3, r.output
    assert "no track in split 'test'" in r.output and "train 3" in r.output and "--split train" in r.output
    with pytest.raises(Exception, match=r"splits held: train \(3 tracks\)"):
        evaluate_datadir(None, DataDir.open(data), split="test")


def test_serve_limits_reach_the_server_settings(cwd, monkeypatch):
    """--max-rate and --max-channels are the ServeSettings the app is built with."""
    import stemforge.serve
    from stemforge.core.errors import StemforgeError
    from stemforge.separate.separator import Separator

    seen = {}
    monkeypatch.setattr(Separator, "from_checkpoint", classmethod(lambda cls, *a, **k: object()))

    def create_app(separator, settings, model_info=None):
        seen["settings"] = settings
        raise StemforgeError("stopped before listening")

    monkeypatch.setattr(stemforge.serve, "create_app", create_app)
    r = CliRunner().invoke(app, ["serve", "model.pt", "--max-rate", "44100", "--max-channels", "1"])
    assert "stopped before listening" in r.output and r.exit_code not in (0, 2), r.output
    settings = seen["settings"]
    assert (settings.max_rate, settings.max_channels) == (44100, 1)
    assert settings.max_samples == int(settings.max_seconds * 44100) * 1


def test_no_valid_split_advice_never_names_an_option_the_split_rule_ignores(tmp_path):
    """MIR-1K's huang2014 rule fixes the split (the fraction options do not apply): the warning
    says so rather than recommending --valid-fraction. With the singers rule it still does."""
    from stemforge.synth.layouts import write_corpus

    root = tmp_path / "MIR-1K"
    write_corpus(root, "mir1k", 2, 2.0, 0, singers=1, clip_seconds=2.0)
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", "mir1k", str(root), "--out", str(tmp_path / "a"), "-j", "1", "--split-rule", "huang2014"])
    assert r.exit_code == 0, r.output
    if "NO VALID SPLIT" in r.output:  # the rule may hold songs out for validation; if not, the advice must fit it
        advice = r.output[r.output.index("NO VALID SPLIT"):]
        assert "--valid-fraction" not in advice and "huang2014" in advice, r.output
    r = runner.invoke(app, ["ingest", "mir1k", str(root), "--out", str(tmp_path / "b"), "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "NO VALID SPLIT" in r.output and "--valid-fraction" in r.output[r.output.index("NO VALID SPLIT"):], r.output
