// The stemforge serve page: drop or pick a song, upload it with progress, poll the job, show the
// stems. Plain JavaScript, no build step, nothing fetched from elsewhere.
"use strict";

(function () {
  const STEMS = ["mixture", "vocals", "accompaniment"];
  const POLL_MS = 500;
  const $ = (id) => document.getElementById(id);

  const drop = $("drop");
  const input = $("file");
  const folderInput = $("folder");
  const progressBox = $("progress");
  const resultBox = $("result");
  const errorBox = $("error");

  let info = null;        // GET /api/info
  let jobId = null;       // the job being shown
  let xhr = null;         // the upload in flight
  let pollTimer = null;

  function setState(state) {
    document.body.dataset.state = state;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    setState("error");
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function mib(bytes) {
    return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MiB";
  }

  function minutes(seconds) {
    return seconds >= 120 ? Math.round(seconds / 60) + " minutes" : Math.round(seconds) + " seconds";
  }

  async function loadInfo() {
    try {
      const r = await fetch("/api/info");
      if (!r.ok) return;
      info = await r.json();
      $("limits").textContent =
        info.formats.join(", ") + " \u00b7 up to " + mib(info.max_upload_bytes) +
        " and " + minutes(info.max_seconds) + " \u00b7 results kept " + minutes(info.expire_minutes * 60);
      $("version").textContent = info.version;
      const m = info.model || {};
      $("model").textContent = m.target ? "model: " + m.target + " mask" + (m.step !== undefined ? ", step " + m.step : "") : "";
    } catch (e) {
      // The page still works without the limits line.
    }
  }

  function reset() {
    if (xhr) { xhr.abort(); xhr = null; }
    if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; }
    jobId = null;
    progressBox.hidden = true;
    resultBox.hidden = true;
    drop.hidden = false;
    input.value = "";
    folderInput.value = "";
    for (const stem of STEMS) {
      const box = resultBox.querySelector('[data-stem="' + stem + '"]');
      const audio = box.querySelector("audio");
      audio.pause();
      audio.removeAttribute("src");
      audio.load();
      box.querySelector("img").removeAttribute("src");
      box.querySelector("a").removeAttribute("href");
    }
    setState("idle");
  }

  function setBar(bar, text, fraction, label) {
    $(bar).value = fraction;
    $(text).textContent = label !== undefined ? label : Math.round(fraction * 100) + "%";
  }

  // The file to separate in a chosen song folder, as `stemforge separate` would name it: the
  // folder's only audio file, else its one file with a generic name (mixture.wav, mix.flac, ...;
  // the server's list). Returns [file, null] or [null, reason].
  function songOfFolder(files) {
    const formats = (info && info.formats) || ["wav", "flac", "mp3", "ogg", "m4a"];
    const generic = (info && info.generic_names) || ["mixture", "mix"];
    const top = Array.from(files).filter((f) => {
      const parts = (f.webkitRelativePath || f.name).split("/");
      const ext = f.name.includes(".") ? f.name.split(".").pop().toLowerCase() : "";
      return parts.length === 2 && formats.includes(ext);
    });
    if (top.length === 1) return [top[0], null];
    const named = top.filter((f) => generic.includes(f.name.replace(/\.[^.]*$/, "").toLowerCase()));
    if (named.length === 1) return [named[0], null];
    const folder = files.length ? (files[0].webkitRelativePath || "").split("/")[0] : "";
    return [null, "The folder " + folder + " holds " + top.length + " audio files and " +
      (named.length ? named.length + " mixtures" : "no mixture (" + generic.slice(0, 3).join(", ") + ", ...)") +
      ": choose the file itself."];
  }

  function start(file) {
    if (!file) return;
    reset();
    clearError();
    if (info && file.size > info.max_upload_bytes) {
      showError(file.name + " is " + mib(file.size) + "; this server accepts up to " + mib(info.max_upload_bytes) + ".");
      return;
    }
    drop.hidden = true;
    progressBox.hidden = false;
    $("job-name").textContent = file.name;
    setBar("upload-bar", "upload-text", 0);
    setBar("sep-bar", "sep-text", 0, "");
    $("job-stage").textContent = "Uploading\u2026";
    setState("uploading");

    const form = new FormData();
    // A file of a chosen folder goes with its folder ("Artist - Title/mixture.wav"): the server
    // names a generic file after it, as `stemforge separate` does (browsers give a page no folder
    // for a single dropped or chosen file).
    form.append("file", file, file.webkitRelativePath || file.name);
    xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/jobs");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) setBar("upload-bar", "upload-text", e.loaded / e.total);
    };
    xhr.onload = () => {
      const body = xhr.response || {};
      const status = xhr.status;
      xhr = null;
      if (status === 202 && body.id) {
        setBar("upload-bar", "upload-text", 1);
        jobId = body.id;
        render(body);
        schedulePoll();
      } else {
        progressBox.hidden = true;
        drop.hidden = false;
        showError(describe(status, body));
      }
    };
    xhr.onerror = () => {
      xhr = null;
      progressBox.hidden = true;
      drop.hidden = false;
      showError("The upload failed (the server closed the connection; is the file too large?).");
    };
    xhr.send(form);
  }

  function describe(status, body) {
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    const what = {
      413: "Too large",
      415: "Not an audio file this server can read",
      422: "Refused",
      503: "The server is busy",
    }[status] || "Error " + status;
    return detail ? what + ": " + detail : what + ".";
  }

  function schedulePoll() {
    pollTimer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    pollTimer = null;
    const id = jobId;
    if (!id) return;
    let r;
    try {
      r = await fetch("/api/jobs/" + encodeURIComponent(id), { cache: "no-store" });
    } catch (e) {
      if (id === jobId) schedulePoll(); // the server may be restarting; keep trying
      return;
    }
    if (id !== jobId) return;
    if (r.status === 404) {
      progressBox.hidden = true;
      drop.hidden = false;
      showError("The job is gone (it expired or was deleted).");
      jobId = null;
      return;
    }
    const body = await r.json();
    render(body);
    if (body.state === "queued" || body.state === "running") schedulePoll();
  }

  const STAGES = {
    decoding: "Decoding the song\u2026",
    separating: "Separating vocals and accompaniment\u2026",
    writing: "Writing the stems and drawing their spectrograms\u2026",
  };

  function render(job) {
    if (job.state === "queued") {
      setState("queued");
      $("job-stage").textContent = job.queue_position
        ? "Waiting for a free worker: place " + job.queue_position + " in the queue."
        : "Waiting for a free worker\u2026";
      setBar("sep-bar", "sep-text", 0, "queued");
    } else if (job.state === "running") {
      setState("running");
      $("job-stage").textContent = STAGES[job.stage] || "Working\u2026";
      setBar("sep-bar", "sep-text", job.progress);
    } else if (job.state === "failed") {
      progressBox.hidden = true;
      drop.hidden = false;
      showError("Separation failed: " + (job.error || "unknown reason"));
      jobId = null;
    } else if (job.state === "done") {
      setBar("sep-bar", "sep-text", 1);
      showResult(job);
    }
  }

  function showResult(job) {
    progressBox.hidden = true;
    resultBox.hidden = false;
    const seconds = job.duration_s ? " \u00b7 " + job.duration_s.toFixed(1) + " s" : "";
    const base = job.track || "song";
    // the song's name first when the file's own name does not say it (mixture.wav of a folder)
    const named = base !== job.filename.replace(/\.[^.]*$/, "") ? base + " \u00b7 " : "";
    $("result-name").textContent = named + job.filename + seconds;
    for (const stem of STEMS) {
      const files = job.stems[stem];
      const box = resultBox.querySelector('[data-stem="' + stem + '"]');
      box.querySelector("audio").src = files.wav;
      const img = box.querySelector("img");
      if (files.png) {
        img.src = files.png;
        img.hidden = false;
      } else {
        img.hidden = true;
      }
      const a = box.querySelector("a");
      a.href = files.wav + "?download=1";
      a.download = base + "-" + stem + ".wav";
    }
    setState("done");
  }

  // Drag and drop on the whole drop zone; the page ignores drops elsewhere (no navigation).
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) start(files[0]);
  });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => start(input.files[0]));
  folderInput.addEventListener("change", () => {
    if (!folderInput.files.length) return;
    const [file, reason] = songOfFolder(folderInput.files);
    if (file) {
      start(file);
    } else {
      clearError();
      showError(reason);
    }
  });

  $("cancel").addEventListener("click", () => {
    const id = jobId;
    reset();
    if (id) fetch("/api/jobs/" + encodeURIComponent(id), { method: "DELETE" }).catch(() => {});
  });
  $("again").addEventListener("click", () => {
    const id = jobId;
    reset();
    clearError();
    if (id) fetch("/api/jobs/" + encodeURIComponent(id), { method: "DELETE" }).catch(() => {});
  });

  loadInfo();
})();
