"""Each recipe checks its own options (``check_options``, also called by ``discover``), the CLI
reports what it refuses as a usage error under the option's flag, and the ingest summary's
figures (stemforge.ingest.summary) are library functions."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core.errors import OptionError
from stemforge.recipes import RECIPES, get_recipe

#: (corpus, options check_options refuses, the option it names, words of the reason)
REFUSED = [
    ("medleydb", {"voices": "robots"}, "voices", "must be one of singing, all"),
    ("medleydb", {"mixture": "mp3"}, "mixture", "must be one of derived, file"),
    ("medleydb", {"versions": "V1,V9"}, "versions", "unknown MedleyDB version 'V9'"),
    ("medleydb", {"valid_fraction": 1.5}, "valid_fraction", "must be in [0, 1)"),
    ("mir1k", {"unit": "bars"}, "unit", "must be one of clips, songs"),
    ("mir1k", {"split_rule": "coin"}, "split_rule", "must be one of singers, huang2014"),
    ("mir1k", {"valid_fraction": 0.6, "test_fraction": 0.5}, "valid_fraction", "must stay below 1, got 1.1"),
    ("ikala", {"test_fraction": -0.1}, "test_fraction", "must be in [0, 1)"),
    ("ccmixter", {"valid_fraction": 1.0}, "valid_fraction", "must be in [0, 1)"),
    ("musdb", {"fmt": "ogg"}, "fmt", "must be one of auto, stems, hq"),
    ("csv", {"name": "my songs"}, "name", "use letters, digits"),
    ("csv", {"length_tolerance": -5}, "length_tolerance", "0 or more"),
    ("pairs", {"name": ""}, "name", "use letters, digits"),
    ("pairs", {"min_score": 1.5}, "min_score", "[0, 1]"),
    ("pairs", {"max_offset_s": 0.0}, "max_offset_s", "must be > 0 seconds"),
]


@pytest.mark.parametrize("corpus", sorted(RECIPES))
def test_every_recipe_checks_its_options_and_takes_its_defaults(corpus):
    recipe = get_recipe(corpus)
    assert callable(getattr(recipe, "check_options", None)), corpus
    recipe.check_options()  # the defaults pass


@pytest.mark.parametrize("corpus,options,option,words", REFUSED, ids=lambda v: str(v))
def test_check_options_names_the_option(corpus, options, option, words):
    with pytest.raises(OptionError) as info:
        get_recipe(corpus).check_options(**options)
    assert info.value.option == option and words in info.value.reason, info.value


@pytest.mark.parametrize("corpus,options,option,words", REFUSED, ids=lambda v: str(v))
def test_discover_refuses_what_check_options_refuses(tmp_path, corpus, options, option, words):
    root = tmp_path / "list.csv" if corpus in ("csv", "pairs") else tmp_path
    with pytest.raises(OptionError) as info:
        get_recipe(corpus).discover(root, **options)
    assert info.value.option == option


@pytest.mark.parametrize(
    "argv,flag_and_reason",
    [
        (["ingest", "mir1k", "corpus", "--split-rule", "coin"], "--split-rule: must be one of singers, huang2014, huang2014-singer, got 'coin'"),
        (["ingest", "musdb", "corpus", "--format", "ogg"], "--format: must be one of auto, stems, hq, got 'ogg'"),
        (
            ["ingest", "ikala", "corpus", "--valid-fraction", "0.5", "--test-fraction", "0.5"],
            "--valid-fraction: --valid-fraction + --test-fraction must stay below 1, got 1",
        ),
        (["ingest", "csv", "list.csv", "--name", "a b"], "--name: use letters, digits, '_', '-', '.' only, got 'a b'"),
    ],
)
def test_cli_reports_a_refused_option_under_its_flag(tmp_path, monkeypatch, argv, flag_and_reason):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for {flag_and_reason}" in r.output
    assert "DataDir:" not in r.output and not any(tmp_path.iterdir())


# -- stemforge.ingest.summary ---------------------------------------------------------------


def _manifest() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": ["a:1", "a:2", "a:3", "b:1"],
            "split": ["train", "train", "test", "valid"],
            "duration_s": [3600.0, 1800.0, 900.0, 360.0],
            "duplicate_of": ["", None, "", "a:1"],
        }
    )


def test_split_table_counts_added_tracks_duplicates_and_hours():
    from stemforge.ingest.summary import split_table

    rows = {r["split"]: r for r in split_table(_manifest(), {"a:2", "b:1"})}
    assert rows["train"] == {"split": "train", "added": 1, "added_h": 0.5, "tracks": 2, "duplicates": 0, "hours": 1.5}
    assert rows["valid"] == {"split": "valid", "added": 1, "added_h": 0.1, "tracks": 1, "duplicates": 1, "hours": 0.1}
    assert rows["test"]["added"] == 0 and rows["test"]["added_h"] == 0.0 and rows["test"]["hours"] == 0.25


def test_excluded_by_rule_groups_by_the_reason_head_largest_first():
    from stemforge.ingest.summary import excluded_by_rule

    kinds = excluded_by_rule(
        [("x:1", "bleed: has_bleed"), ("x:2", "instrumental: no voice"), ("x:3", "instrumental: no voice"), ("x:4", "/a/b: odd")]
    )
    assert list(kinds) == ["instrumental", "bleed", "other"]
    assert kinds["instrumental"] == [("x:2", "instrumental: no voice"), ("x:3", "instrumental: no voice")]


def test_moved_rows_are_the_old_rows_whose_split_changed():
    from stemforge.ingest.summary import moved_rows

    before = pd.DataFrame({"uid": ["a:1", "a:2", "a:3"], "split": ["train", "valid", "test"]})
    assert moved_rows(before, _manifest(), {"a:2"}) == []  # a:2 is new this run, a:1 and a:3 kept their split
    before.loc[0, "split"] = "valid"
    assert moved_rows(before, _manifest(), set()) == [("a:1", "valid", "train"), ("a:2", "valid", "train")]
    assert moved_rows(before.iloc[:0], _manifest(), set()) == []


def test_suggest_valid_fraction_takes_the_first_fraction_that_gives_a_valid_song():
    from stemforge.ingest.summary import suggest_valid_fraction

    seen = []

    def discover(root, valid_fraction, test_fraction=0.15):
        seen.append(valid_fraction)
        split = "valid" if valid_fraction >= 0.25 else "train"
        return [SimpleNamespace(split=split, skip_reason=None, error=None), SimpleNamespace(split="train", skip_reason="x", error=None)]

    recipe = SimpleNamespace(discover=discover, VALID_FRACTION=0.1, TEST_FRACTION=0.15)
    assert suggest_valid_fraction(recipe, "root", {"valid_fraction": 0.1}) == (0.25, 1, 1)
    assert seen == [0.15, 0.2, 0.25]
    seen.clear()
    assert suggest_valid_fraction(recipe, "root", {"valid_fraction": 0.2, "test_fraction": 0.8}) is None
    assert seen == []  # 0.15 and 0.2 are not above the current fraction; 0.25 + 0.8 >= 1
    assert suggest_valid_fraction(recipe, "root", {"valid_fraction": 0.5}) is None and seen == []

    def broken(root, **options):
        raise OSError("gone")

    assert suggest_valid_fraction(SimpleNamespace(discover=broken, VALID_FRACTION=0.1, TEST_FRACTION=0.15), "root", {}) is None
