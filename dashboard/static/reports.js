// The Robustness tab: robustness reports (report.json of attack, certify, verify, ... jobs) listed and
// shown side by side. Generic: it draws whatever headline, tables, plots, images and summary a report
// has. Uses h(), api(), $ and state from charts.js / app.js.
"use strict";

const reports = {list: [], selected: new Set(), versions: {}, initialised: false};

// A headline number: integers as they are, others to 4 significant digits.
function fmtNumber(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

const fileUrl = (r, k) => `/api/reports/${r.index}/files/${k}?v=${r.version}`;

// Reads /api/reports; true when the list or a report changed since the last call.
async function loadReports() {
  const data = await api("/api/reports");
  reports.list = data.reports;
  document.querySelector("#tabs button[data-tab=robustness]").hidden = data.reports.length === 0;
  if (!reports.initialised) {
    const first = data.reports.find((r) => r.state === "ready");
    if (first) reports.selected.add(first.index);
    reports.initialised = true;
  }
  let changed = false;
  for (const r of data.reports) {
    if (reports.versions[r.index] !== r.version) changed = true;
    reports.versions[r.index] = r.version;
  }
  return changed;
}

function drawReportList() {
  const rows = reports.list.map((r) => {
    const box = h("input", {type: "checkbox", "data-report": r.index, checked: reports.selected.has(r.index),
                            disabled: r.state === "error",
                            onchange: (e) => {
                              if (e.target.checked) reports.selected.add(r.index); else reports.selected.delete(r.index);
                              drawRobustness();
                            }});
    const headline = Object.entries(r.headline || {}).slice(0, 3).map(([k, v]) => `${k} ${fmtNumber(v)}`).join(" · ");
    return h("tr", {"data-report": r.index, class: r.state === "ready" ? "" : r.state},
      h("td", {}, box), h("td", {}, r.index), h("td", {}, r.job || "–"),
      h("td", {}, r.state === "error" ? h("span", {class: "err"}, r.error) : r.title),
      h("td", {title: r.path}, r.name), h("td", {}, r.created || "–"), h("td", {class: "hint"}, headline));
  });
  $("reports-list").tBodies[0].replaceChildren(...rows);
}

// One table of the headline figures of every shown report: a row per name (first-seen order over the
// reports), a column per report, so the same figure of each report sits on one line.
function headlineTable(shown) {
  const names = [];
  for (const r of shown) for (const k of Object.keys(r.headline || {})) if (!names.includes(k)) names.push(k);
  const head = h("tr", {}, h("th", {}, "headline"), shown.map((r) => h("th", {"data-report": r.index}, `#${r.index} ${r.job || ""}: ${r.name}`)));
  const body = names.map((name) => h("tr", {"data-name": name}, h("th", {}, name), shown.map((r) => {
    const v = (r.headline || {})[name];
    return h("td", {"data-report": r.index, "data-name": name, "data-value": v === undefined || v === null ? "" : v}, fmtNumber(v));
  })));
  return h("table", {id: "headline-table", class: "report-table"}, h("thead", {}, head), h("tbody", {}, body));
}

function reportTable(t) {
  const cell = (c) => (typeof c === "number" ? fmtNumber(c) : c === null || c === undefined ? "" : String(c));
  return h("div", {class: "report-block"}, h("h4", {}, t.title),
    h("div", {class: "scroll"}, h("table", {class: "report-table"},
      h("thead", {}, h("tr", {}, t.columns.map((c) => h("th", {}, String(c))))),
      h("tbody", {}, t.rows.map((row) => h("tr", {}, row.map((c) => h("td", {class: typeof c === "number" ? "num" : ""}, cell(c)))))))));
}

// A plot or image: the PNG when there is one, else the SVG -- always as <img>, where an SVG's scripts never run.
function figureOf(r, item, kind) {
  const k = item.png !== null && item.png !== undefined ? item.png : item.svg;
  const links = [];
  if (item.svg !== null && item.svg !== undefined) links.push(h("a", {href: fileUrl(r, item.svg), target: "_blank"}, "svg"));
  if (item.png !== null && item.png !== undefined) links.push(h("a", {href: fileUrl(r, item.png), target: "_blank"}, "png"));
  return h("figure", {class: `report-figure ${kind}`},
    k === null || k === undefined ? h("p", {class: "hint"}, "file not available") :
      h("img", {src: fileUrl(r, k), alt: item.title, "data-file": k, loading: "lazy"}),
    h("figcaption", {}, item.title, " ", links.flatMap((a) => [a, " "])));
}

function reportColumn(r) {
  const meta = [r.job, r.created, r.device && `on ${r.device}`, r.seed !== undefined && `seed ${r.seed}`,
                typeof r.seconds === "number" && `${fmtNumber(r.seconds)} s`].filter(Boolean).join(" · ");
  const col = h("div", {class: "report-col", "data-report": r.index},
    h("h3", {}, `#${r.index} ${r.title}`), h("p", {class: "hint"}, meta, " · ", h("span", {title: r.path}, r.name)));
  if (r.state !== "ready") {
    col.append(h("p", {class: "hint"}, "No report.json yet: the job is still running (this page updates when it ends)."));
    return col;
  }
  if (r.summary && r.summary.length) col.append(h("div", {class: "report-block summary"}, h("h4", {}, "summary"),
    h("ul", {}, r.summary.map((line) => h("li", {}, line)))));
  for (const t of r.tables || []) col.append(reportTable(t));
  if ((r.plots || []).length) col.append(h("h4", {}, "plots"), h("div", {class: "report-figures"}, r.plots.map((p) => figureOf(r, p, "plot"))));
  if ((r.images || []).length) col.append(h("h4", {}, "images"), h("div", {class: "report-figures"}, r.images.map((p) => figureOf(r, p, "image"))));
  if ((r.problems || []).length) col.append(h("div", {class: "report-block problems"}, h("h4", {}, "files not served"),
    h("ul", {}, r.problems.map((p) => h("li", {}, p)))));
  col.append(h("details", {}, h("summary", {}, "config, dataset, model, versions"),
    h("pre", {}, JSON.stringify({config: r.config, dataset: r.dataset, model: r.model, versions: r.versions}, null, 2))));
  return col;
}

async function drawRobustness() {
  drawReportList();
  const chosen = reports.list.filter((r) => reports.selected.has(r.index) && r.state !== "error");
  if (!chosen.length) {
    $("reports-view").replaceChildren(h("p", {class: "hint"}, reports.list.length ? "Tick a report above to show it." :
      "No robustness reports open (threedb dashboard OUT_DIR, where OUT_DIR holds a job's report.json)."));
    return;
  }
  try {
    const shown = await Promise.all(chosen.map((r) => api(`/api/reports/${r.index}`)));
    const columns = h("div", {class: "report-columns", id: "report-columns"}, shown.map(reportColumn));
    columns.style.gridTemplateColumns = `repeat(${shown.length}, minmax(0, 1fr))`;
    $("reports-view").replaceChildren(h("h3", {}, "Headline figures"), h("div", {class: "scroll"}, headlineTable(shown)), columns);
    $("reports-view").dataset.shown = shown.map((r) => r.index).join(",");
  } catch (err) { showError(err); }
}
