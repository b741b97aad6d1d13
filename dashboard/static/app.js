// The dashboard's front end: plain JS over the JSON API (docs/dashboard.md). Aggregations are
// computed by the server; this file only draws them and keeps the view live by polling /api/runs.
"use strict";

const POLL_MS = 1500;
const PER_PAGE = 24;
const state = {
  runs: [], run: 0, versions: {}, tab: "explore",
  params: [], modes: {}, sliders: {}, cell: null, outcome: "all", page: 0, masks: false,
};
const $ = (id) => document.getElementById(id);

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(err) {
  const box = $("error");
  box.textContent = String(err.message || err);
  box.hidden = false;
  setTimeout(() => { box.hidden = true; }, 6000);
}

const runUrl = (path, r = state.run) => `/api/runs/${r}/${path}`;
const imageUrl = (id, pass = "rgb", r = state.run) => runUrl(`images/${encodeURIComponent(id)}/${pass}`, r);
const query = (pairs) => new URLSearchParams(pairs).toString();
// A parameter's name without "render_args." (kept when a render argument is itself called model or environment).
const short = (name) => {
  const bare = name.replace(/^render_args\./, "");
  return bare === "model" || bare === "environment" ? name : bare;
};

// -- runs and live updates ---------------------------------------------------------------------
async function loadRuns() {
  const data = await api("/api/runs");
  state.runs = data.runs;
  const none = data.runs.length === 0;  // a dashboard over robustness reports only
  $("run-label").hidden = none;
  $("live").hidden = none;
  document.querySelectorAll("#tabs button:not([data-tab=robustness])").forEach((b) => { b.hidden = none; });
  if (none) return data.runs;
  const select = $("run-select");
  if (select.options.length !== data.runs.length) {
    select.replaceChildren(...data.runs.map((r) => h("option", {value: r.index}, `${r.index}: ${r.name}`)));
    for (const id of ["cmp-a", "cmp-b"]) $(id).replaceChildren(...data.runs.map((r) => h("option", {value: r.index}, `${r.index}: ${r.name}`)));
    if (data.runs.length > 1) $("cmp-b").value = "1";
  }
  const run = data.runs[state.run];
  $("live").textContent = `${run.rows} rows · accuracy ${pct(run.total.accuracy)} · ${run.total.failed} failed` +
    problemsText(run) + " · live";
  $("live").dataset.rows = run.rows;
  $("live").dataset.skipped = run.skipped;
  $("live").dataset.badValues = run.bad_values;
  return data.runs;
}

// What of the log could not be used: lines skipped (by reason) and rows whose non-finite numbers were dropped.
function problemsText(run) {
  let text = "";
  if (run.skipped) {
    const reasons = Object.entries(run.skipped_reasons || {}).map(([why, n]) => `${n} ${why}`).join(", ");
    text += ` · ${run.skipped} corrupt line${run.skipped === 1 ? "" : "s"} skipped (${reasons})`;
  }
  if (run.bad_values) text += ` · ${run.bad_values} row${run.bad_values === 1 ? "" : "s"} with NaN/Infinity values (treated as missing)`;
  return text;
}

const skippedText = (skipped) => Object.entries(skipped || {}).map(([why, n]) => `${n} ${why}`).join(", ");

async function poll() {
  try {
    const runs = await loadRuns();
    const changed = runs.some((r) => state.versions[r.index] !== undefined && state.versions[r.index] !== r.version);
    runs.forEach((r) => { state.versions[r.index] = r.version; });
    const reportsChanged = await loadReports();
    if (changed && state.tab !== "robustness") await refresh();
    if (reportsChanged && state.tab === "robustness") await drawRobustness();
  } catch (err) { /* server gone or restarting: keep polling quietly */ }
  setTimeout(poll, POLL_MS);
}

// -- explore: parameters, heat map, grid -----------------------------------------------------------
async function loadParams() {
  const data = await api(runUrl("params"));
  state.params = data.params;
  const names = data.params.map((p) => p.name);
  for (const k of Object.keys(state.modes)) if (!names.includes(k)) delete state.modes[k];
  if (!Object.values(state.modes).includes("x") && !Object.values(state.modes).includes("y")) {
    const axes = data.params.filter((p) => p.labels.length > 1).map((p) => p.name).slice(0, 2);
    axes.forEach((name, i) => { state.modes[name] = i === 0 ? "x" : "y"; });
  }
  for (const p of data.params) if (!state.modes[p.name]) state.modes[p.name] = "aggregate";
  for (const [name, bin] of Object.entries(state.sliders)) {
    const p = data.params.find((q) => q.name === name);
    if (!p || bin >= p.labels.length) state.sliders[name] = 0;
  }
  drawParams();
}

function setMode(name, mode) {
  if (mode === "x" || mode === "y") {  // one parameter per axis: the previous one goes back to aggregate
    for (const [k, m] of Object.entries(state.modes)) if (m === mode) state.modes[k] = "aggregate";
  }
  state.modes[name] = mode;
  if (mode === "slider" && state.sliders[name] === undefined) state.sliders[name] = 0;
  state.cell = null;
  state.page = 0;
  drawParams();
  refreshExplore();
}

function drawParams() {
  const rows = state.params.map((p) => {
    const mode = state.modes[p.name];
    const radios = ["x", "y", "slider", "aggregate"].map((m) => h("label", {},
      h("input", {type: "radio", name: `mode-${p.name}`, value: m, checked: mode === m,
                  "data-param": p.name, onchange: () => setMode(p.name, m)}),
      m === "x" ? "X axis" : m === "y" ? "Y axis" : m));
    let slider = "";
    if (mode === "slider") {
      const bin = state.sliders[p.name] || 0;
      const label = h("span", {class: "slider-label"}, p.labels[bin]);
      slider = h("span", {}, h("input", {type: "range", min: 0, max: p.labels.length - 1, value: bin, "data-param": p.name,
        oninput: (e) => { state.sliders[p.name] = Number(e.target.value); label.textContent = p.labels[state.sliders[p.name]]; },
        onchange: () => { state.cell = null; state.page = 0; refreshExplore(); }}), " ", label);
    }
    return h("tr", {"data-param": p.name}, h("td", {title: p.name}, short(p.name)),
             h("td", {}, `${p.labels.length} (${p.kind})`), h("td", {class: "mode"}, radios), h("td", {}, slider));
  });
  $("params").tBodies[0].replaceChildren(...rows);
}

function axis(which) {
  return Object.entries(state.modes).find(([, m]) => m === which)?.[0] || null;
}

function fixedPairs(key) {
  return Object.entries(state.modes).filter(([, m]) => m === "slider").map(([name]) => [key, `${name}:${state.sliders[name] || 0}`]);
}

async function drawHeatmap() {
  const x = axis("x"), y = axis("y");
  const pairs = [["x", x || ""], ["y", y || ""], ...fixedPairs("fix")];
  const data = await api(`${runUrl("heatmap")}?${query(pairs)}`);
  const xl = data.x ? data.x.labels : ["all"], yl = data.y ? data.y.labels : ["all"];
  const head = h("tr", {}, h("th", {}, `${y ? short(y) : ""} \\ ${x ? short(x) : ""}`), xl.map((l) => h("th", {}, l)));
  const body = data.cells.map((row, yi) => h("tr", {}, h("th", {}, yl[yi]), row.map((c, xi) => {
    const td = h("td", {class: "cell" + (c.n ? "" : " empty"), "data-xi": xi, "data-yi": yi, "data-n": c.n,
                        "data-correct": c.correct, "data-accuracy": c.accuracy === null ? "" : c.accuracy,
                        title: `${c.correct}/${c.n} correct, ${c.failed} failed jobs`,
                        onclick: () => { if (c.n || c.failed) selectCell(xi, yi); }},
                  c.n ? pct(c.accuracy) : "–", h("span", {class: "count"}, `n=${c.n}`));
    td.style.background = accColor(c.accuracy);
    if (state.cell && state.cell.xi === xi && state.cell.yi === yi) td.classList.add("selected");
    return td;
  })));
  $("heatmap").replaceChildren(h("table", {class: "heatmap", id: "heatmap-table"}, h("thead", {}, head), h("tbody", {}, body)));
  const sliders = fixedPairs("fix").map(([, v]) => short(v));
  $("heatmap-summary").textContent = `${data.total.n} evaluated rows, accuracy ${pct(data.total.accuracy)}` +
    (sliders.length ? ` · fixed: ${sliders.join(", ")}` : "") + " · click a cell to see its renders";
}

function selectCell(xi, yi) {
  state.cell = {xi, yi};
  state.page = 0;
  refreshExplore();
}

function gridFilters() {
  const pairs = fixedPairs("filter");
  if (state.cell) {
    const x = axis("x"), y = axis("y");
    if (x) pairs.push(["filter", `${x}:${state.cell.xi}`]);
    if (y) pairs.push(["filter", `${y}:${state.cell.yi}`]);
  }
  return pairs;
}

// An image the server would not serve (a symlink out of the run, too many pixels...): say why in its place.
async function refusedImage(img, url) {
  let why = "image not available";
  try { await api(url); } catch (err) { why = err.message; }
  img.replaceWith(h("span", {class: "refused", title: why}, why));
}

function gridItem(item, r = state.run) {
  const cls = item.failed ? "failed" : item.correct ? "correct" : item.correct === false ? "wrong" : "";
  const frameBox = h("div", {class: "frame"});
  if (item.passes.includes("rgb")) {
    const img = h("img", {src: imageUrl(item.id, "rgb", r), alt: item.id, loading: "lazy"});
    img.addEventListener("error", () => refusedImage(img, imageUrl(item.id, "rgb", r)));
    frameBox.append(img);
  }
  else frameBox.append(h("span", {}, item.failed ? "failed job" : "no image logged"));
  if (state.masks && item.passes.includes("mask")) frameBox.append(h("img", {class: "mask", src: imageUrl(item.id, "mask", r), alt: "mask"}));
  if (item.boxes.length) {
    const svg = s("svg", {viewBox: "0 0 1 1", preserveAspectRatio: "none"});
    for (const b of item.boxes) {
      svg.append(s("rect", {x: b.box[0], y: b.box[1], width: b.box[2] - b.box[0], height: b.box[3] - b.box[1],
                            fill: "none", stroke: "#ffeb3b", "stroke-width": 0.015}, s("title", {}, `${b.label} ${b.score.toFixed(2)}`)));
    }
    frameBox.append(svg);
  }
  const caption = h("figcaption", {},
    h("div", {class: "pred"}, "pred: ", item.predicted.length ? item.predicted.join(", ") : "–"),
    h("div", {class: "true"}, "true: ", item.true.join(", ")),
    item.error ? h("div", {class: "err"}, item.error) : null,
    h("div", {class: "id"}, item.id, " ", h("a", {href: `/m/${r}/${encodeURIComponent(item.id)}`, target: "_blank"}, "phone page")));
  const fig = h("figure", {class: `item ${cls}`, "data-id": item.id, title: JSON.stringify(item.render_args)}, frameBox, caption);
  return fig;
}

async function drawGrid() {
  const pairs = [...gridFilters(), ["outcome", state.outcome], ["page", state.page], ["per_page", PER_PAGE]];
  const data = await api(`${runUrl("select")}?${query(pairs)}`);
  const pages = Math.max(1, Math.ceil(data.total / PER_PAGE));
  $("grid").replaceChildren(...data.items.map((item) => gridItem(item)));
  $("grid").dataset.total = data.total;
  $("page-info").textContent = `page ${state.page + 1} / ${pages} (${data.total} renders)`;
  $("prev-page").disabled = state.page === 0;
  $("next-page").disabled = state.page + 1 >= pages;
  const what = gridFilters().map(([, v]) => {
    const [name, bin] = [v.slice(0, v.lastIndexOf(":")), Number(v.slice(v.lastIndexOf(":") + 1))];
    const p = state.params.find((q) => q.name === name);
    return `${short(name)} ∈ ${p ? p.labels[bin] : bin}`;
  });
  $("grid-title").textContent = what.length ? `where ${what.join(" and ")}` : "(all rows)";
}

async function refreshExplore() {
  try { await drawHeatmap(); await drawGrid(); } catch (err) { showError(err); }
}

// -- other tabs ---------------------------------------------------------------------------------------
function regionText(mode) {
  return mode.params.map((p, i) => `${short(p)} ∈ ${mode.labels[i]}`).join("  &  ");
}

const num = (x) => (x !== 0 && x < 0.001 ? x.toExponential(1) : x.toPrecision(2));
const RANK_COLUMN = {accuracy: 3, wilson: 4, test: 6};  // the column the ranking sorts by

async function drawFailures() {
  const rank = $("rank").value || "wilson";
  const data = await api(`${runUrl("failures")}?${query({min_count: $("min-count").value || 5, rank})}`);
  const rows = data.modes.map((m, i) => h("tr", {class: "mode-row" + (m.significant ? " significant" : ""), "data-n": m.n},
    h("td", {}, i + 1), h("td", {}, m.kind),
    h("td", {}, regionText(m)), h("td", {}, pct(m.accuracy)),
    h("td", {class: "interval", "data-lo": m.interval[0], "data-hi": m.interval[1]}, intervalBar(m.interval, m.accuracy, data.overall.accuracy)),
    h("td", {}, `${m.correct}/${m.n}`), h("td", {class: "q", title: `one-sided p = ${num(m.p_value)}`}, num(m.q_value) + (m.significant ? " *" : "")),
    h("td", {class: "thumbs"}, m.examples.map((id) => h("img", {src: imageUrl(id), alt: id, title: id, onerror: (e) => e.target.remove()})))));
  $("failures").replaceChildren(
    h("p", {class: "hint", id: "failures-hint"}, `overall accuracy ${pct(data.overall.accuracy)} over ${data.overall.n} rows; ` +
      `${data.regions} regions with at least ${data.min_count} rows, ranked by ${data.ranks[data.rank]}. ` +
      `Interval: ${Math.round(data.confidence * 100)} % Wilson; q: Benjamini-Hochberg over the ${data.regions} regions ` +
      `(* at most ${Math.round(data.fdr * 100)} % false discoveries).`),
    h("table", {id: "failures-table", "data-rank": data.rank}, h("thead", {}, h("tr", {},
      ["#", "kind", "where", "accuracy", `${Math.round(data.confidence * 100)} % interval`, "correct/n", "q-value", "wrong examples"]
        .map((t, k) => h("th", {class: k === RANK_COLUMN[data.rank] ? "sorted" : null}, t)))),
      h("tbody", {}, rows)));
}

async function drawObjects() {
  const all = await Promise.all(state.runs.map((r) => api(runUrl("objects", r.index))));
  const data = all[state.run];
  const models = [...new Set(all.flatMap((d) => d.objects.map((o) => o.model)))].sort();
  const head = h("tr", {}, h("th", {}, "object"), state.runs.map((r) => h("th", {}, `run ${r.index}: ${r.name}`)));
  const rows = models.map((m) => h("tr", {}, h("td", {}, m), all.map((d) => {
    const o = d.objects.find((x) => x.model === m);
    return h("td", {"data-model": m, "data-run": d.run}, o ? `${pct(o.accuracy)} (${o.correct}/${o.n})` : "–");
  })));
  $("objects-table").replaceChildren(h("table", {id: "objects"}, h("thead", {}, head), h("tbody", {}, rows)));
  $("curves").replaceChildren(...Object.entries(data.curves).map(([param, c]) => lineChart(short(param), c.labels,
    Object.fromEntries(Object.entries(c.series).map(([m, pts]) => [m, pts.map((p) => p.accuracy)])))));
  const conf = data.confusion;
  const max = Math.max(1, ...conf.counts.flat());
  const table = h("table", {id: "confusion-table"}, h("thead", {}, h("tr", {}, h("th", {}, "object \\ predicted"), conf.columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, conf.rows.map((m, i) => h("tr", {}, h("th", {}, m), conf.counts[i].map((n) => {
      const td = h("td", {}, n);
      td.style.background = `rgba(21, 101, 192, ${(0.8 * n) / max})`;
      return td;
    })))));
  $("confusion").replaceChildren(table);
}

async function drawEnvironments() {
  const data = await api(runUrl("environments"));
  $("env-box").replaceChildren(boxPlot(data.environments.map((e) => ({
    label: e.environment, note: pct(e.accuracy), box: e.box,
    points: e.objects.map((o) => ({label: o.model, value: o.accuracy}))}))));
  const cx = await api(runUrl("complexity"));
  const labels = cx.bins.map((b) => `${b.lo.toFixed(3)}–${b.hi.toFixed(3)}`);
  $("complexity").replaceChildren(
    h("p", {class: "hint", id: "complexity-measure"}, `${cx.measure}; ${cx.points.length} images in ${cx.bins.length} equal-count bins; ` +
      `correlation with correctness ${cx.correlation === null ? "–" : cx.correlation.toFixed(3)}` +
      (Object.keys(cx.skipped).length ? `; images left out: ${skippedText(cx.skipped)}` : "")),
    barChart(labels, {accuracy: cx.bins.map((b) => b.accuracy)}));
}

async function drawSurface() {
  const model = state.params.find((p) => p.name === "model");
  const select = $("surface-model");
  const names = model ? model.labels : [];
  if (select.options.length !== names.length) select.replaceChildren(...names.map((n) => h("option", {value: n}, n)));
  const q = query({model: select.value || ""});
  try {
    const data = await api(`${runUrl("surface")}?${q}`);
    const left = Object.keys(data.skipped).length ? ` (uv passes left out: ${skippedText(data.skipped)})` : "";
    if (!data.rows) {
      $("surface").replaceChildren(h("p", {class: "hint", id: "surface-missing"}, data.missing + left));
      return;
    }
    $("surface").replaceChildren(h("img", {src: `${runUrl("surface.png")}?${q}&v=${state.versions[state.run]}`, alt: "surface heat map"}),
      h("p", {class: "hint"}, `${data.model}: ${data.rows} renders, ${data.grid}×${data.grid} UV cells (u right, v up)${left}`));
  } catch (err) { showError(err); }
}

async function drawCompare() {
  const a = Number($("cmp-a").value || 0), b = Number($("cmp-b").value || 0);
  const pselect = $("cmp-param");
  if (pselect.options.length !== state.params.length) {
    pselect.replaceChildren(...state.params.map((p) => h("option", {value: p.name}, short(p.name))));
  }
  if (state.runs.length < 2) {
    $("compare").replaceChildren(h("p", {class: "hint"}, "Open two run directories (threedb dashboard RUN_A RUN_B) to compare them."));
    return;
  }
  const data = await api(`/api/compare?${query({a, b, param: pselect.value})}`);
  const ag = data.agreement;
  const rows = (data.bins || []).map((r) => h("tr", {}, h("td", {}, r.label), h("td", {}, r.n), h("td", {}, pct(r.accuracy_a)), h("td", {}, pct(r.accuracy_b))));
  $("compare").replaceChildren(
    h("p", {}, `${data.joined} jobs in both runs: A ${pct(data.accuracy_a)}, B ${pct(data.accuracy_b)}; both correct ${ag.both_correct}, ` +
      `only A ${ag.only_a}, only B ${ag.only_b}, both wrong ${ag.both_wrong}`),
    barChart((data.bins || []).map((r) => r.label), {A: data.bins.map((r) => r.accuracy_a), B: data.bins.map((r) => r.accuracy_b)}),
    h("table", {id: "compare-table"}, h("thead", {}, h("tr", {}, ["bin", "n", "A", "B"].map((t) => h("th", {}, t)))), h("tbody", {}, rows)),
    h("h3", {}, "Jobs where A and B disagree (A's render, then B's)"),
    h("div", {class: "thumbs", id: "disagree"}, data.disagree.map((d) => h("figure", {"data-id": d.id},
      [[a, d.a], [b, d.b]].map(([r, ok]) => h("img", {src: imageUrl(d.id, "rgb", r), class: ok ? "ok" : "", title: `${d.id} (run ${r})`,
                                                     onerror: (e) => { e.target.alt = "no image"; }})),
      h("figcaption", {}, `A ${d.a ? "✓" : "✗"} · B ${d.b ? "✓" : "✗"}`)))));
}

const DRAW = {explore: refreshExplore, failures: drawFailures, objects: drawObjects, environments: drawEnvironments,
              surface: drawSurface, compare: drawCompare, robustness: () => drawRobustness()};

async function refresh() {
  try {
    if (state.runs.length) await loadParams();
    await DRAW[state.tab]();
  } catch (err) { showError(err); }
}

function showTab(tab) {
  state.tab = tab;
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll("section.tab").forEach((s) => { s.hidden = s.id !== `tab-${tab}`; });
  refresh();
}

window.addEventListener("DOMContentLoaded", async () => {
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("run-select").addEventListener("change", (e) => {
    state.run = Number(e.target.value); state.modes = {}; state.sliders = {}; state.cell = null; state.page = 0;
    loadRuns().then(() => refresh());
  });
  $("outcome").addEventListener("change", (e) => { state.outcome = e.target.value; state.page = 0; drawGrid().catch(showError); });
  $("show-masks").addEventListener("change", (e) => { state.masks = e.target.checked; drawGrid().catch(showError); });
  $("prev-page").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); drawGrid().catch(showError); });
  $("next-page").addEventListener("click", () => { state.page += 1; drawGrid().catch(showError); });
  $("min-count").addEventListener("change", () => drawFailures().catch(showError));
  $("rank").addEventListener("change", () => drawFailures().catch(showError));
  $("surface-model").addEventListener("change", () => drawSurface());
  for (const id of ["cmp-a", "cmp-b", "cmp-param"]) $(id).addEventListener("change", () => drawCompare().catch(showError));
  try {
    const runs = await loadRuns();
    runs.forEach((r) => { state.versions[r.index] = r.version; });
    await loadReports();
    if (!runs.length) showTab("robustness");
    else await refresh();
    document.body.dataset.ready = "1";
  } catch (err) { showError(err); }
  setTimeout(poll, POLL_MS);
});
