// The companion phone page /m/<run>/<id>: overlay a render (or its edge overlay) translucently on the
// phone's camera view to place a real object to match, and fetch the pose and USDZ. Data comes from
// /api/runs/<run>/companion/<id> (a `threedb companion export` of the job).
"use strict";

const [, , runIndex, encodedId] = location.pathname.split("/");
const jobId = decodeURIComponent(encodedId || "");
const base = `/api/runs/${runIndex}`;
const el = (id) => document.getElementById(id);

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({error: response.statusText}));
  return {ok: response.ok, status: response.status, body};
}

function say(text) { el("message").textContent = text; }

function show(info) {
  const files = info.files;
  el("export-box").hidden = true;
  el("stage").hidden = false;
  el("controls").hidden = false;
  for (const id of ["sizer", "render"]) el(id).src = files.render;
  el("overlay").src = files.overlay;
  el("overlay").hidden = !el("edges").checked;
  const opacity = () => { el("render").style.opacity = el("render-opacity").value / 100; };
  el("render-opacity").addEventListener("input", opacity);
  opacity();
  el("edges").addEventListener("change", (e) => { el("overlay").hidden = !e.target.checked; });
  el("links").replaceChildren(
    h("a", {href: files.usdz, rel: "ar", id: "usdz-link"}, "object.usdz"), " ",
    h("a", {href: files.pose, id: "pose-link"}, "pose.json"), " ",
    h("a", {href: files.mask}, "mask.png"));
  // pose.json, with each list of numbers on one line
  getJson(files.pose).then((r) => {
    if (r.ok) el("pose").textContent = JSON.stringify(r.body, null, 1).replace(/\[[-\d.e+,\s]*\]/g, (m) => m.replace(/\s+/g, " "));
  });
  say(`render ${jobId}: ${info.entry.object_uid || info.entry.model || "object"} in ${info.entry.environment || "?"}`);
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    say("No camera access here (browsers allow it on https:// or localhost only).");
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}, audio: false});
    const video = el("camera");
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
  } catch (err) { say(`camera: ${err.message}`); }
}

async function load() {
  el("job").textContent = jobId;
  const row = await getJson(`${base}/rows/${encodeURIComponent(jobId)}`);
  if (!row.ok) { say(row.body.error); document.body.dataset.state = "unknown"; return; }
  const info = await getJson(`${base}/companion/${encodeURIComponent(jobId)}`);
  if (info.ok) { show(info.body); document.body.dataset.state = "exported"; return; }
  say(info.body.error);
  document.body.dataset.state = "missing";
  if (row.body.item.passes.includes("rgb")) {  // the logged render, until an export exists
    el("stage").hidden = false;
    for (const id of ["sizer", "render"]) el(id).src = `${base}/images/${encodeURIComponent(jobId)}/rgb`;
    el("overlay").hidden = true;
  }
  el("export-box").hidden = false;
}

async function exportNow() {
  el("export").disabled = true;
  const started = await getJson(`${base}/companion/${encodeURIComponent(jobId)}/export`, {method: "POST", headers: {"X-Threedb": "1"}});
  if (!started.ok) { say(started.body.error); el("export").disabled = false; return; }
  say("exporting (re-rendering in Blender)…");
  const wait = async () => {
    const info = await getJson(`${base}/companion/${encodeURIComponent(jobId)}`);
    if (info.ok) { show(info.body); document.body.dataset.state = "exported"; return; }
    if (!/being exported/.test(info.body.error)) { say(info.body.error); el("export").disabled = false; return; }
    setTimeout(wait, 2000);
  };
  setTimeout(wait, 2000);
}

window.addEventListener("DOMContentLoaded", () => {
  el("start-camera").addEventListener("click", startCamera);
  el("export").addEventListener("click", exportNow);
  load();
});
