"""Every command has --help with an example, and the four invocations users type work as written."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from stemforge.cli.main import app

#: The Click command tree of the app, built once (10 ms a build): the tests read it, never change it.
ROOT = get_command(app)


def _commands() -> list[list[str]]:
    out = []
    for name, cmd in ROOT.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            out += [[name, sub] for sub in subs]
        else:
            out.append([name])
    return out


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a))
def test_help_has_an_example(argv):
    result = CliRunner().invoke(app, argv + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and "stemforge " + argv[0] in result.output


def test_the_four_user_invocations_parse(tmp_path, monkeypatch):
    """`ingest medleydb PATH`, `derive-vocals orig karaoke`, `augment --hours 17`, `train` take their
    DataDir from the default and say which one they use."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEMFORGE_DATA", raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", "medleydb", str(tmp_path / "nowhere")])
    assert r.exit_code == 3 and "stemforge-data" in r.output
    r = runner.invoke(app, ["augment", "--hours", "17"])
    assert r.exit_code == 3 and "stemforge-data" in r.output and "not a stemforge DataDir" in r.output
    r = runner.invoke(app, ["train"])
    assert r.exit_code == 3 and "stemforge-data" in r.output
    r = runner.invoke(app, ["derive-vocals", "orig.wav", "karaoke.wav"])
    assert r.exit_code == 3 and "orig.wav" in r.output


def _command(argv: list[str]):
    cmd = ROOT
    for name in argv:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("width", [50, 64, 80])
@pytest.mark.parametrize("argv", [[], ["ingest"], *_commands()], ids=lambda a: " ".join(a) if isinstance(a, list) else str(a))
def test_help_never_breaks_an_option_name_or_an_example(argv, width):
    """Wrapped help breaks lines only at spaces: every option name is whole on one line, no line
    ends in a hyphen glued to a word (``--pitch-`` / ``semitones``), and every ``Example:`` is one
    line (a pasted example that spans two lines runs as two commands)."""
    result = CliRunner().invoke(app, argv + ["--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    text = result.output
    assert not re.search(r"\w-\n", text), text
    cmd = _command(argv)
    for param in cmd.params:
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (name, text)
    for paragraph in (cmd.help or "").split("\n\n"):
        if paragraph.strip().startswith("Example:"):
            assert " ".join(paragraph.split()) in text, (paragraph, text)


def test_root_help_lists_commands_in_pipeline_order_with_whole_summaries():
    from stemforge.cli.main import COMMAND_ORDER

    text = CliRunner().invoke(app, ["--help"]).output
    listed = re.findall(r"^  ([a-z][a-z0-9-]+)\s", text.split("Commands:")[1], re.M)
    assert listed == list(COMMAND_ORDER) == [
        "synth", "ingest", "derive-vocals", "info", "validate", "augment", "train",
        "import-chainer", "import-spleeter", "combine", "ensemble", "defaults", "separate", "evaluate", "serve", "demo",
    ]
    flat = " ".join(text.split())
    assert "Train the U-Net (Jansson et al. 2017) on a DataDir's train split; validate on its valid split." in flat
    assert "..." not in text.split("Commands:")[1]  # no summary is cut


def test_summary_is_the_first_sentence_whole():
    from stemforge.console.help import summary

    assert summary("Train it (Jansson et al. 2017) on data.\n\nMore.") == "Train it (Jansson et al. 2017) on data."
    assert summary("Check it. Exit 0 when valid.") == "Check it."
    assert summary("Grow it (e.g. 2 h) until done") == "Grow it (e.g. 2 h) until done"


def test_separate_help_says_the_mask_is_at_the_checkpoints_geometry():
    text = " ".join(CliRunner().invoke(app, ["separate", "--help"]).output.split())
    assert "16 kHz mono STFT" not in text
    assert "the STFT geometry its checkpoint records" in text and "Spleeter" in text


def test_medleydb_help_says_one_split_unit():
    """MedleyDB's split assigns whole artists: the page says so and never says 'by song'."""
    text = " ".join(CliRunner().invoke(app, ["ingest", "medleydb", "--help"]).output.split())
    assert "by song" not in text and "whole song" not in text
    assert "Split: by artist" in text and "whole artists" in text
