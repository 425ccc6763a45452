"""The upload seam of ``stemforge serve`` on bytes and paths, without a server
(``stemforge/serve/upload.py``): format sniffing, the multipart body fed in chunks to
python-multipart's streaming parser, the deadlines of the body, and the probe of a stored file.
The same refusals through the HTTP API are in tests/unit/serve/test_serve_api.py.
"""

from __future__ import annotations

import asyncio
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemforge.serve.upload import (
    CLOSE,
    FORM_OVERHEAD,
    MAX_PARTS,
    SNIFF_BYTES,
    MultipartUpload,
    UploadRefused,
    display_name,
    multipart_boundary,
    probe,
    receive_upload,
    refuse_declared_oversize,
    sniff_suffix,
)

BOUNDARY = b"sfboundary"


def wav_bytes(seconds: float = 0.25, rate: int = 8000, channels: int = 2) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * (1 + c) * t) for c in range(channels)], axis=1)
    sf.write(buf, x.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return (
        b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode()
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    )


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def feed(folder: Path, data: bytes, chunk: int, limit: int = 1 << 20) -> MultipartUpload:
    """``data`` fed to a MultipartUpload in pieces of ``chunk`` bytes (not closed)."""
    upload = MultipartUpload(BOUNDARY, folder, limit)
    for i in range(0, len(data), chunk):
        upload.write(data[i : i + chunk])
    return upload


def refusal(call) -> UploadRefused:
    with pytest.raises(UploadRefused) as info:
        call()
    return info.value


# --------------------------------------------------------------------------- sniffing
@pytest.mark.parametrize(
    "head, suffix",
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", ".wav"),
        (b"fLaC\x00\x00\x00\x22", ".flac"),
        (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01\x1evorbis", ".ogg"),
        (b"OggS\x00\x02" + b"\x00" * 22 + b"OpusHead", ".opus"),
        (b"FORM\x00\x00\x00\x10AIFFCOMM", ".aiff"),
        (b"FORM\x00\x00\x00\x10AIFCFVER", ".aiff"),
        (b"\x00\x00\x00\x20ftypM4A ", ".m4a"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", ".webm"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", ".mp3"),
        (b"\xff\xfb\x90\x64\x00", ".mp3"),  # an MPEG frame without a tag
    ],
)
def test_the_format_comes_from_the_first_bytes_whatever_the_name(head, suffix):
    assert sniff_suffix(head, "song.txt") == suffix
    assert sniff_suffix(head, "") == suffix


def test_the_clients_extension_counts_only_when_the_bytes_say_nothing():
    text = b"just some text, no magic number at all"
    assert sniff_suffix(text, "Song.FLAC") == ".flac"
    assert sniff_suffix(text, "a.b.mp3") == ".mp3"
    assert sniff_suffix(text, "song.txt") is None
    assert sniff_suffix(text, "song") is None
    assert sniff_suffix(text, "../../etc/passwd") is None
    assert sniff_suffix(b"", "x.exe") is None


def test_display_names_keep_only_the_last_printable_component():
    assert display_name("C:\\music\\..\\Song (live).mp3") == "Song (live).mp3"
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("a\x00b\nc.wav") == "abc.wav"
    assert display_name("") == display_name(None) == display_name("dir/") == "upload"
    assert len(display_name("x" * 500 + ".wav")) == 120


def test_the_request_head_is_checked_before_the_body():
    assert multipart_boundary("multipart/form-data; boundary=abc") == b"abc"
    for content_type in (None, "audio/wav", "multipart/form-data", "multipart/mixed; boundary=abc"):
        assert refusal(lambda: multipart_boundary(content_type)).status_code == 415
    limit = 1000
    refuse_declared_oversize(None, limit)
    refuse_declared_oversize("not a number", limit)
    refuse_declared_oversize(str(limit + FORM_OVERHEAD), limit)
    too_big = refusal(lambda: refuse_declared_oversize(str(limit + FORM_OVERHEAD + 1), limit))
    assert too_big.status_code == 413 and too_big.headers == CLOSE


# --------------------------------------------------------------------------- the body
@pytest.mark.parametrize("chunk", [1, 7, SNIFF_BYTES - 1, SNIFF_BYTES, 1000, 1 << 20])
def test_the_file_part_is_stored_whole_under_its_sniffed_name(tmp_path, chunk):
    song = wav_bytes()
    data = body(part("note", b"ignored"), part("file", song, "My Song.mp3"), part("other", b"x" * 100))
    upload = feed(tmp_path, data, chunk)
    stored = upload.finish()
    upload.close()
    # the bytes say RIFF/WAVE: stored as input.wav whatever the client called it
    assert stored.path == tmp_path / "input.wav" and stored.filename == "My Song.mp3"
    assert stored.size == len(song) and stored.path.read_bytes() == song
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.wav"]


def test_the_file_appears_only_when_its_part_is_complete(tmp_path):
    song = wav_bytes()
    data = body(part("file", song, "s.wav"))
    upload = feed(tmp_path, data[: len(data) // 2], 100)
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith(".input.wav.") and names[0].endswith(".tmp")
    upload.close()  # the client went away: nothing is left
    assert list(tmp_path.iterdir()) == []


def test_a_file_shorter_than_the_sniffed_head_is_stored(tmp_path):
    tiny = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 10  # 20 bytes
    assert len(tiny) < SNIFF_BYTES
    upload = feed(tmp_path, body(part("file", tiny, "t.bin")), 3)
    stored = upload.finish()
    assert stored.path.name == "input.mp3" and stored.path.read_bytes() == tiny and stored.size == len(tiny)


def test_refusals_of_the_form(tmp_path):
    song = wav_bytes()
    cases = {
        "no file": (body(part("song", song)), 422, "no file in the form field 'file'"),  # a field, not a file
        "empty": (body(part("file", b"", "e.wav")), 415, "the file is empty"),
        "not audio": (body(part("file", b"hello " * 100, "notes.txt")), 415, "not a recognized audio file"),
    }
    for name, (data, status, detail) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        upload = feed(folder, data, 64)
        refused = refusal(upload.finish)
        upload.close()
        assert (refused.status_code, refused.detail[: len(detail)]) == (status, detail), name
        assert list(folder.iterdir()) == [], name  # an unrecognized file is counted, never stored
    two = tmp_path / "two"
    two.mkdir()
    refused = refusal(lambda: feed(two, body(part("file", song, "a.wav"), part("file", song, "b.wav")), 512))
    assert (refused.status_code, refused.detail) == (422, "send one file per request")
    many = tmp_path / "many"
    many.mkdir()
    fields = [part(f"f{i}", b"x") for i in range(MAX_PARTS)]
    refused = refusal(lambda: feed(many, body(*fields, part("file", song, "a.wav")), 512))
    assert (refused.status_code, refused.detail) == (422, f"too many form fields (at most {MAX_PARTS})")
    bad = tmp_path / "bad"
    bad.mkdir()
    refused = refusal(lambda: feed(bad, b"--other\r\nContent-Disposition: form-data\r\n\r\nx", 512))
    assert refused.status_code == 422 and refused.detail.startswith("malformed multipart body (")


def test_an_oversize_file_is_cut_off_at_the_limit(tmp_path):
    limit = 10_000
    upload = MultipartUpload(BOUNDARY, tmp_path, limit)
    head = part("file", b"", "big.wav")[:-2]  # the part's head, its data to follow
    upload.write(head + b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 52)
    fed = 0
    with pytest.raises(UploadRefused) as info:
        while fed < 100 * limit:
            upload.write(b"\x01" * 1000)
            fed += 1000
    upload.close()
    assert info.value.status_code == 413 and info.value.headers == CLOSE
    assert fed <= limit  # stopped at the first chunk past the limit
    assert list(tmp_path.iterdir()) == []
    # a body over the limit plus the form's overhead, even without a file part
    upload = MultipartUpload(BOUNDARY, tmp_path, limit)
    refused = refusal(lambda: upload.write(b"\x00" * (limit + FORM_OVERHEAD + 1)))
    assert refused.status_code == 413


def test_memory_does_not_grow_with_the_upload(tmp_path):
    """20 MiB through the parser in 64 KiB chunks: the Python heap peaks at a few chunks."""
    chunk = b"\x02" * (64 * 1024)
    upload = MultipartUpload(BOUNDARY, tmp_path, 64 << 20)
    tracemalloc.start()
    try:
        upload.write(part("file", b"", "long.wav")[:-2] + b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 52)
        for _ in range(320):
            upload.write(chunk)
        upload.write(b"\r\n--" + BOUNDARY + b"--\r\n")
        stored = upload.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        upload.close()
    assert stored.size == 64 + 320 * len(chunk) and stored.path.stat().st_size == stored.size
    assert peak < 1 << 20, f"peak {peak / 2**20:.1f} MiB for a 20 MiB upload"


# --------------------------------------------------------------------------- the deadlines
def run_receive(tmp_path: Path, messages, timeout_s: float = 0.2, min_rate: float = 1e9):
    """receive_upload over a scripted ASGI ``receive``: each item a message, or a number of
    seconds to wait before the next."""

    async def main():
        items = list(messages)

        async def receive():
            while items and isinstance(items[0], (int, float)):
                await asyncio.sleep(items.pop(0))
            if items:
                return items.pop(0)
            await asyncio.sleep(3600)

        return await receive_upload(receive, BOUNDARY, tmp_path, 1 << 20, timeout_s, min_rate)

    return asyncio.run(main())


def test_the_body_is_read_from_receive_with_deadlines(tmp_path):
    data = body(part("file", wav_bytes(), "s.wav"))
    halves = [data[:100], data[100:]]
    for name in ("ok", "stall", "gone", "slow"):
        (tmp_path / name).mkdir()
    stored = run_receive(tmp_path / "ok", [
        {"type": "http.request", "body": halves[0], "more_body": True},
        0.1,  # a pause under the timeout
        {"type": "http.request", "body": halves[1], "more_body": False},
    ], timeout_s=2.0)
    assert stored.path.read_bytes() == wav_bytes()
    with pytest.raises(UploadRefused) as info:
        run_receive(tmp_path / "stall", [{"type": "http.request", "body": halves[0], "more_body": True}])
    assert info.value.status_code == 408 and info.value.headers == CLOSE
    assert info.value.detail.startswith("upload too slow: 100 bytes in ")
    assert list((tmp_path / "stall").iterdir()) == []
    with pytest.raises(UploadRefused) as info:
        run_receive(tmp_path / "gone", [{"type": "http.request", "body": halves[0], "more_body": True}, {"type": "http.disconnect"}])
    assert (info.value.status_code, info.value.detail) == (400, "the client went away during the upload")
    assert list((tmp_path / "gone").iterdir()) == []
    # Trickling: no pause reaches the timeout, but 4 bytes every 0.05 s (80 B/s) stay under
    # min_rate: the body's deadline (timeout + received / min_rate) passes long before its end.
    trickle = []
    for i in range(0, len(data), 4):
        trickle += [0.05, {"type": "http.request", "body": data[i : i + 4], "more_body": True}]
    with pytest.raises(UploadRefused) as info:
        run_receive(tmp_path / "slow", trickle, timeout_s=0.2, min_rate=1000.0)
    assert info.value.status_code == 408
    received = int(info.value.detail.split()[3])
    assert 0 < received < 200, info.value.detail  # cut off while the body still came


# --------------------------------------------------------------------------- the probe
def test_the_probe_reads_the_header_and_the_first_samples(tmp_path):
    good = tmp_path / "input.wav"
    good.write_bytes(wav_bytes(0.5, 8000, 2))
    facts = probe(good, max_seconds=5.0, max_channels=2)
    assert (facts.duration_s, facts.sample_rate, facts.channels) == (0.5, 8000, 2)
    long = tmp_path / "long.wav"
    long.write_bytes(wav_bytes(3.0, 8000, 1))
    refused = refusal(lambda: probe(long, max_seconds=2.0, max_channels=2))
    assert (refused.status_code, refused.detail) == (422, "the song lasts 3.0 s; this server accepts at most 2 s")
    wide = tmp_path / "wide.wav"
    wide.write_bytes(wav_bytes(0.5, 8000, 3))
    refused = refusal(lambda: probe(wide, max_seconds=5.0, max_channels=2))
    assert (refused.status_code, refused.detail) == (422, "not accepted: has 3 channels; at most 2 are accepted")
    text = tmp_path / "text.wav"
    text.write_bytes(b"not audio at all " * 20)
    refused = refusal(lambda: probe(text, max_seconds=5.0, max_channels=2))
    assert refused.status_code == 415 and refused.detail.startswith("not a decodable audio file: ")
    assert str(tmp_path) not in refused.detail and "\n" not in refused.detail
    # A FLAC that does not know its length passes with duration 0 (the job's decode counts).
    unknown = tmp_path / "input.flac"
    sf.write(unknown, np.zeros((4000, 1), np.float32) + 0.1, 8000, subtype="PCM_16")
    raw = bytearray(unknown.read_bytes())
    raw[8 + 13] &= 0xF0  # the 36-bit total-samples field of STREAMINFO: set to 0
    raw[8 + 14 : 8 + 18] = b"\x00\x00\x00\x00"
    unknown.write_bytes(bytes(raw))
    facts = probe(unknown, max_seconds=5.0, max_channels=2)
    assert (facts.duration_s, facts.sample_rate, facts.channels) == (0.0, 8000, 1)
