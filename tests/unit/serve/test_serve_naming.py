"""`stemforge serve` names its downloads as `stemforge separate` names a track (one rule,
stemforge.core.names): a generic file name such as mixture.mp3 is named after the folder the
client sends with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemforge.core.names import GENERIC_NAMES
from stemforge.separate.naming import track_name
from test_serve_api import encode, make_client, tone, upload, wait


@pytest.mark.parametrize(
    "sent, track",
    [
        ("Artist - Title/mixture.wav", "Artist - Title"),  # MUSDB18-HQ's layout: the CLI's folder name
        ("corpus/Song A/mix.wav", "Song A"),
        ("music/Band - Hit/Original.wav", "Band - Hit"),
        ("My Song (live).wav", "My Song (live)"),
        ("Artist - Title/My.Song.v2.wav", "My.Song.v2"),  # not generic: the file's own name
        ("mixture.wav", "mixture"),  # no folder sent: nothing else to name it by
        ("../../mixture.wav", "mixture"),  # '..' is no name
    ],
)
def test_downloads_are_named_as_the_cli_names_the_track(tmp_path, sent, track):
    with make_client(tmp_path) as client:
        r = upload(client, encode(tone(0.5), "wav"), sent)
        assert r.status_code == 202, r.text
        status = wait(client, r.json()["id"])
        assert status["state"] == "done", status
        assert status["track"] == track
        assert status["filename"] == sent.rsplit("/", 1)[-1]  # display: the file's name
        r = client.get(status["stems"]["vocals"]["wav"] + "?download=1")
        assert _disposition_name(r.headers["content-disposition"]) == f"{track}-vocals.wav"
    if "/" in sent and ".." not in sent:
        assert track_name(Path(sent)) == track  # what `stemforge separate` names the same file


def test_info_lists_the_generic_names(tmp_path):
    with make_client(tmp_path) as client:
        assert client.get("/api/info").json()["generic_names"] == sorted(GENERIC_NAMES)


def _disposition_name(header: str) -> str:
    """The file name of a Content-Disposition header (``filename*=utf-8''...`` or ``filename="..."``)."""
    from urllib.parse import unquote

    if "filename*=utf-8''" in header:
        return unquote(header.split("filename*=utf-8''", 1)[1].split(";")[0])
    return header.split('filename="', 1)[1].split('"')[0]
