"""Every command has --help with an example, and the four invocations users type work as written."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from stemforge.cli.main import app


def _commands() -> list[list[str]]:
    root = get_command(app)
    out = []
    for name, cmd in root.commands.items():
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


def test_package_exports_are_lazy():
    import subprocess
    import sys

    code = (
        "import sys, stemforge; assert 'torch' not in sys.modules and 'h5py' not in sys.modules; "
        "from stemforge import DataDir, Separator, SpectrogramConfig, TrainConfig; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
