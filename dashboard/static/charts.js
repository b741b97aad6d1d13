// Small SVG/DOM helpers for the dashboard (no libraries: nothing is fetched from a CDN).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037", "#ad1457"];

// h("div", {class: "x"}, child, "text", ...) -> HTMLElement; attributes are set, never HTML-parsed.
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c.nodeType ? c : String(c));
  return node;
}

function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c.nodeType ? c : String(c));
  return node;
}

const pct = (a) => (a === null || a === undefined ? "–" : `${Math.round(a * 1000) / 10}%`);
// accuracy 0 -> red, 1 -> green
const accColor = (a) => (a === null || a === undefined ? "#eee" : `hsl(${Math.round(120 * a)}, 65%, ${60 - 10 * a}%)`);

function frame(width, height, pad) {
  return {svg: s("svg", {width, height, viewBox: `0 0 ${width} ${height}`}),
          x0: pad.l, x1: width - pad.r, y0: height - pad.b, y1: pad.t};
}

function yAxis(f, ticks = [0, 0.5, 1]) {
  const y = (a) => f.y0 - a * (f.y0 - f.y1);
  for (const t of ticks) {
    f.svg.append(s("line", {x1: f.x0, x2: f.x1, y1: y(t), y2: y(t), stroke: "#e0e0e0"}),
                 s("text", {x: f.x0 - 4, y: y(t) + 3, "text-anchor": "end"}, pct(t)));
  }
  return y;
}

// Lines over categorical x labels: series = {name: [value 0..1 or null, ...]}
function lineChart(title, labels, series, width = 360, height = 200) {
  const f = frame(width, height + 20, {l: 38, r: 8, t: 8, b: 66});
  const y = yAxis(f);
  const step = (f.x1 - f.x0) / Math.max(1, labels.length);
  const x = (i) => f.x0 + step * (i + 0.5);
  labels.forEach((label, i) => f.svg.append(
    s("text", {x: x(i), y: f.y0 + 12, transform: `rotate(30 ${x(i)} ${f.y0 + 12})`}, label.length > 14 ? label.slice(0, 13) + "…" : label)));
  const legend = h("div", {class: "legend"});
  Object.entries(series).forEach(([name, values], k) => {
    const color = PALETTE[k % PALETTE.length];
    let d = "", pen = false;
    values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      f.svg.append(s("circle", {cx: x(i), cy: y(v), r: 2.5, fill: color}, s("title", {}, `${name}: ${pct(v)}`)));
    });
    f.svg.append(s("path", {d, fill: "none", stroke: color, "stroke-width": 1.5}));
    legend.append(h("span", {}, h("i", {class: "swatch", "data-color": color}), name));
  });
  legend.querySelectorAll("i").forEach((i) => { i.style.background = i.dataset.color; });
  return h("div", {class: "chart"}, h("h3", {}, title), f.svg, legend);
}

// A label cut to at most n characters (the full text goes in a <title>).
const clip = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);

// Box plots: groups = [{label, note, box: {min, q1, median, q3, max}, points: [{label, value}]}]. Group labels
// are written vertically under their box (cut to fit, full text on hover), so any number of long
// names stays readable; the plot widens to keep at least 28 px per group.
function boxPlot(groups, width = 520, height = 350) {
  width = Math.max(width, 46 + 28 * groups.length);
  const f = frame(width, height, {l: 38, r: 8, t: 8, b: 150});
  const y = yAxis(f, [0, 0.25, 0.5, 0.75, 1]);
  const step = (f.x1 - f.x0) / Math.max(1, groups.length);
  groups.forEach((g, i) => {
    const cx = f.x0 + step * (i + 0.5), w = Math.min(40, step * 0.5);
    const full = g.note ? `${g.label} (${g.note})` : g.label;
    const text = g.note ? `${clip(g.label, 16)} (${g.note})` : clip(g.label, 24);
    f.svg.append(s("text", {class: "group-label", x: cx + 3, y: f.y0 + 6, "text-anchor": "end",
                            transform: `rotate(-90 ${cx + 3} ${f.y0 + 6})`}, s("title", {}, full), text));
    if (g.box.median === null) return;
    f.svg.append(
      s("line", {x1: cx, x2: cx, y1: y(g.box.min), y2: y(g.box.max), stroke: "#555"}),
      s("rect", {class: "box", x: cx - w / 2, width: w, y: y(g.box.q3), height: Math.max(1, y(g.box.q1) - y(g.box.q3)),
                 fill: "#bbdefb", stroke: "#1565c0"}, s("title", {}, `${full}: median ${pct(g.box.median)}`)),
      s("line", {x1: cx - w / 2, x2: cx + w / 2, y1: y(g.box.median), y2: y(g.box.median), stroke: "#0d47a1", "stroke-width": 2}));
    g.points.forEach((p) => f.svg.append(s("circle", {cx: cx + w * 0.7, cy: y(p.value), r: 2.5, fill: "#ef6c00"},
                                             s("title", {}, `${p.label}: ${pct(p.value)}`))));
  });
  return f.svg;
}

// A confidence interval on a 0..1 scale: bar [lo, hi], dot at the estimate, tick at the overall accuracy.
function intervalBar(interval, estimate, overall, width = 120) {
  const x = (a) => 4 + a * (width - 8);
  const [lo, hi] = interval;
  const svg = s("svg", {width, height: 14, viewBox: `0 0 ${width} 14`, class: "interval-bar"},
    s("line", {x1: x(0), x2: x(1), y1: 7, y2: 7, stroke: "#e0e0e0"}),
    s("rect", {x: x(lo), width: Math.max(1, x(hi) - x(lo)), y: 4, height: 6, fill: "#ef9a9a"}),
    s("circle", {cx: x(estimate), cy: 7, r: 2.5, fill: "#c62828"}),
    overall === null ? null : s("line", {x1: x(overall), x2: x(overall), y1: 1, y2: 13, stroke: "#1565c0"}),
    s("title", {}, `${pct(lo)} – ${pct(hi)} (overall ${pct(overall)})`));
  return h("span", {}, svg, ` ${pct(lo)}–${pct(hi)}`);
}

// Grouped bars: labels on x, series = {name: [value 0..1 or null]}
function barChart(labels, series, width = 560, height = 220) {
  const f = frame(width, height, {l: 38, r: 8, t: 8, b: 46});
  const y = yAxis(f);
  const names = Object.keys(series);
  const step = (f.x1 - f.x0) / Math.max(1, labels.length), bw = (step * 0.8) / Math.max(1, names.length);
  labels.forEach((label, i) => {
    const x0 = f.x0 + step * i + step * 0.1;
    f.svg.append(s("text", {x: x0, y: f.y0 + 12, transform: `rotate(30 ${x0} ${f.y0 + 12})`}, label));
    names.forEach((name, k) => {
      const v = series[name][i];
      if (v === null || v === undefined) return;
      f.svg.append(s("rect", {x: x0 + k * bw, width: bw - 1, y: y(v), height: f.y0 - y(v), fill: PALETTE[k % PALETTE.length]},
                     s("title", {}, `${name} ${label}: ${pct(v)}`)));
    });
  });
  const legend = h("div", {class: "legend"}, names.map((n) => h("span", {}, h("i", {"data-color": PALETTE[names.indexOf(n) % PALETTE.length]}), n)));
  legend.querySelectorAll("i").forEach((i) => { i.style.background = i.dataset.color; });
  return h("div", {class: "chart"}, f.svg, legend);
}
