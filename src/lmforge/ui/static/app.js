// lmforge ui: runs, run pages, side-by-side comparison, compare/tune studies, a playground and
// training jobs, over the JSON API of `lmforge ui` (src/lmforge/ui/app.py). No framework, no CDN:
// the DOM is built with h(), text always goes in as text (never as HTML), charts are plain SVG.
"use strict";

const state = { info: null, timer: null, view: null };
const COLORS = ["#2f5fd0", "#d0542f", "#1e8e3e", "#8e44ad", "#b7791f", "#16a2b8", "#c0392b", "#555"];
const SHOWN = ["accuracy", "macro_f1", "f1", "precision", "recall", "exact_match", "bleu", "rougeL", "perplexity", "loss"];

// ---- helpers -------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}
const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
function fmt(v) {
  if (v === null || v === undefined || v === "") return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en");
  return Math.abs(v) >= 1000 ? v.toFixed(1) : v.toFixed(4);
}
function duration(sec) {
  if (typeof sec !== "number") return "–";
  sec = Math.round(sec);
  if (sec < 60) return sec + "s";
  if (sec < 3600) return Math.floor(sec / 60) + "m" + String(sec % 60).padStart(2, "0") + "s";
  return Math.floor(sec / 3600) + "h" + String(Math.floor((sec % 3600) / 60)).padStart(2, "0") + "m";
}
function badge(text) { return h("span", { class: "badge " + text }, text); }
function runLink(name) { return h("a", { href: "#/run/" + encodeURIComponent(name) }, name); }

function key() { return sessionStorage.getItem("lmforge-key") || ""; }
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (key()) headers["Authorization"] = "Bearer " + key();
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method: options.method || (options.body !== undefined ? "POST" : "GET"), headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined });
  if (res.status === 401) { showKeyForm(); throw new Error("an API key is needed"); }
  if (options.raw) return res;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) throw new Error((data && data.error && data.error.message) || res.status + " " + res.statusText);
  return data;
}

function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}
function setMain(...children) { return fill(document.getElementById("main"), ...children); }
function errorBox(e) { return h("p", { class: "error" }, String(e.message || e)); }

function showKeyForm() {
  stopTimer();
  const input = h("input", { type: "password", id: "key", autocomplete: "off", placeholder: "API key" });
  setMain(h("div", { class: "card" },
    h("h1", {}, "API key"),
    h("p", { class: "muted" }, "This dashboard was started with --api-key. The key stays in this tab only."),
    h("form", { onsubmit: (ev) => { ev.preventDefault(); sessionStorage.setItem("lmforge-key", input.value); route(); } },
      input, h("p", {}, h("button", { type: "submit" }, "Continue")))));
}

function stopTimer() { if (state.timer) { clearInterval(state.timer); state.timer = null; } }
function every(fn) {
  stopTimer();
  const ms = Math.max(200, 1000 * ((state.info && state.info.poll_s) || 2));
  state.timer = setInterval(() => { if (!document.hidden) fn().catch(() => {}); }, ms);
}

// ---- charts ----------------------------------------------------------------------------------
function lineChart(title, series, opts = {}) {
  const W = opts.width || 560, H = opts.height || 260, L = 56, R = 12, T = 24, B = 34;
  const pts = series.flatMap((x) => x.points).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": title });
  svg.append(s("text", { x: L, y: 14, style: "font-weight:600;fill:#333" }, title));
  if (!pts.length) { svg.append(s("text", { x: L, y: H / 2 }, "no data yet")); return svg; }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const X = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4, xv = x0 + ((x1 - x0) * i) / 4;
    svg.append(s("line", { x1: L, x2: W - R, y1: Y(yv), y2: Y(yv), class: "gridline" }));
    svg.append(s("text", { x: L - 6, y: Y(yv) + 4, "text-anchor": "end" }, fmt(+yv.toPrecision(3))));
    svg.append(s("text", { x: X(xv), y: H - B + 16, "text-anchor": "middle" }, fmt(Math.round(xv))));
  }
  svg.append(s("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  svg.append(s("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  if (opts.xlabel) svg.append(s("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, opts.xlabel));
  series.forEach((ser, i) => {
    const color = ser.color || COLORS[i % COLORS.length];
    const good = ser.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (!good.length) return;
    const d = good.map((p, j) => (j ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
    svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": 1.8 }));
    if (good.length < 40) good.forEach((p) => svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.6, fill: color },
      s("title", {}, `${ser.name}: ${fmt(p[1])} at step ${p[0]}`))));
    svg.append(s("text", { x: W - R - 4, y: T + 12 + 14 * i, "text-anchor": "end", style: `fill:${color}` }, ser.name));
  });
  return svg;
}

function heatTable(matrix, labels) {
  const max = Math.max(1, ...matrix.flat());
  const head = h("tr", {}, h("th", {}, "gold \\ predicted"), labels.map((l) => h("th", { class: "num" }, l)));
  const rows = matrix.map((row, i) => h("tr", {}, h("th", {}, labels[i] ?? i), row.map((v, j) => {
    const a = v / max;
    const bg = i === j ? `rgba(30,142,62,${0.12 + 0.7 * a})` : `rgba(192,57,43,${v ? 0.1 + 0.7 * a : 0})`;
    return h("td", { style: `background:${bg}` }, fmt(v));
  })));
  return h("table", { class: "heat compact" }, h("thead", {}, head), h("tbody", {}, rows));
}

function attributionView(expl) {
  const toks = expl.tokens || [];
  const m = Math.max(1e-9, ...toks.map((t) => Math.abs(t.attribution)));
  const line = h("div", {}, toks.map((t) => {
    const a = t.attribution / m;
    const bg = a >= 0 ? `rgba(30,142,62,${Math.abs(a) * 0.75})` : `rgba(192,57,43,${Math.abs(a) * 0.75})`;
    return h("span", { class: "tok", style: `background:${bg}`, title: fmt(t.attribution) }, t.token);
  }));
  const what = [expl.label && `label ${expl.label}`, expl.entity && `entity ${expl.entity}`, expl.score !== undefined && `score ${fmt(expl.score)}`,
    `target ${expl.target}`, `method ${expl.method}`].filter(Boolean).join(" · ");
  return h("div", { class: "explanation" }, h("p", { class: "muted" }, what), line);
}

// ---- views: runs -------------------------------------------------------------------------------
function metricColumns(rows) {
  const have = new Set(rows.flatMap((r) => Object.keys(r.metrics || {})));
  return SHOWN.filter((m) => have.has(m)).slice(0, 5);
}

async function viewRuns() {
  const data = await api("/api/runs");
  const container = h("div", {});
  const selected = new Set();
  const compareBtn = h("button", { class: "secondary", disabled: true, onclick: () => {
    location.hash = "#/compare/" + [...selected].map(encodeURIComponent).join(",");
  } }, "Compare selected");
  function render(data) {
    const rows = data.runs, cols = metricColumns(rows);
    const table = h("table", { id: "runs-table" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), ["run", "task", "model", "tuning", "status", "steps", "time"].map((c) => h("th", {}, c)),
        cols.map((c) => h("th", { class: "num" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", { "data-run": r.run },
        h("td", {}, h("input", { type: "checkbox", checked: selected.has(r.run), onchange: (ev) => {
          ev.target.checked ? selected.add(r.run) : selected.delete(r.run);
          compareBtn.disabled = selected.size < 2;
        } })),
        h("td", {}, runLink(r.run)), h("td", {}, r.task || "?"), h("td", {}, r.model || "?"),
        h("td", {}, r.tuning || r.kind || "–"), h("td", {}, badge(r.problem ? "unreadable" : r.status)),
        h("td", { class: "num" }, fmt(r.steps)), h("td", { class: "num" }, duration(r.seconds)),
        cols.map((c) => h("td", { class: "num" }, fmt((r.metrics || {})[c])))))));
    const studies = data.studies.length ? h("div", { class: "card" }, h("h2", {}, "Compare and tune studies"),
      h("table", {}, h("thead", {}, h("tr", {}, ["folder", "kind", "summary"].map((c) => h("th", {}, c)))),
        h("tbody", {}, data.studies.map((st) => h("tr", {},
          h("td", {}, h("a", { href: `#/study/${st.kind}/${encodeURIComponent(st.name)}` }, st.name)), h("td", {}, st.kind),
          h("td", {}, st.kind === "compare" ? `${st.candidates} candidates · ${st.metric || ""} · ${st.recommendation && st.recommendation.text ? st.recommendation.text : ""}`
            : `${st.trials} trials${st.best ? " · " + st.best : ""}`)))))) : null;
    fill(container, 
      h("div", { class: "row" }, h("h1", {}, "Runs"), h("span", { class: "muted" }, `${rows.length} under ${state.info.runs}`), compareBtn),
      h("div", { class: "card" }, rows.length ? table : h("p", { class: "muted" }, "No run folders yet: start one from Jobs, or run lmforge train.")),
      studies);
  }
  render(data);
  setMain(container);
  every(async () => render(await api("/api/runs")));
}

// ---- views: one run ------------------------------------------------------------------------------
function curves(metrics) {
  const train = metrics.filter((r) => r.kind === "train");
  const evals = metrics.filter((r) => r.kind === "eval");
  const charts = [lineChart("training loss", [{ name: "loss", points: train.map((r) => [r.step, r.loss]) }], { xlabel: "step" })];
  const names = [...new Set(evals.flatMap((r) => Object.keys(r).filter((k) => typeof r[k] === "number" && !["step", "epoch", "count", "seconds"].includes(k))))];
  const bySplit = [...new Set(evals.map((r) => r.split))];
  const quality = SHOWN.filter((n) => n !== "loss" && names.includes(n)).slice(0, 5);
  if (evals.length < 2) return h("div", { class: "grid2" }, charts.map((c) => h("div", { class: "card" }, c)));
  if (quality.length) charts.push(lineChart("evaluation", bySplit.flatMap((sp) => quality.map((n) => ({
    name: (bySplit.length > 1 ? sp + " " : "") + n, points: evals.filter((r) => r.split === sp).map((r) => [r.step, r[n]]) }))), { xlabel: "step" }));
  if (names.includes("loss")) charts.push(lineChart("evaluation loss", bySplit.map((sp) => ({
    name: sp, points: evals.filter((r) => r.split === sp).map((r) => [r.step, r.loss]) })), { xlabel: "step" }));
  return h("div", { class: "grid2" }, charts.map((c) => h("div", { class: "card" }, c)));
}

function splitSection(split, m) {
  const scalars = Object.entries(m).filter(([, v]) => typeof v === "number");
  const parts = [h("h3", {}, split), h("table", { class: "compact" }, h("tbody", {}, scalars.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, fmt(v))))))];
  if (m.per_class && typeof m.per_class === "object") {
    const cls = Object.entries(m.per_class);
    parts.push(h("h3", {}, "per class"), h("table", { class: "compact per-class" },
      h("thead", {}, h("tr", {}, ["label", "precision", "recall", "f1", "support"].map((c) => h("th", { class: c === "label" ? "" : "num" }, c)))),
      h("tbody", {}, cls.map(([label, v]) => h("tr", {}, h("td", {}, label), ["precision", "recall", "f1", "support"].map((k) => h("td", { class: "num" }, fmt(v[k]))))))));
  }
  if (Array.isArray(m.confusion_matrix) && m.confusion_matrix.length) {
    parts.push(h("h3", {}, "confusion matrix"), heatTable(m.confusion_matrix, m.labels || m.confusion_matrix.map((_, i) => String(i))));
  }
  return h("div", { class: "card" }, parts);
}

function samplesTable(preds) {
  if (!preds.length) return null;
  const ner = Array.isArray(preds[0].tokens);
  const gen = !ner && preds[0].reference !== undefined;
  const rows = preds.slice(0, 60).map((p) => {
    if (ner) {
      const gold = (p.gold_entities || []).map((e) => `${e.text}/${e.label}`).join(", ");
      const pred = (p.entities || []).map((e) => `${e.text}/${e.label}`).join(", ");
      return h("tr", { class: p.correct ? "" : "wrong" }, h("td", {}, p.tokens.join(" ")), h("td", {}, gold), h("td", {}, pred), h("td", {}, p.correct ? "✓" : "✗"));
    }
    if (gen) return h("tr", {}, h("td", {}, p.prompt ?? p.text ?? ""), h("td", {}, p.reference), h("td", {}, p.prediction ?? p.label ?? ""));
    const ok = p.gold === undefined ? "" : p.gold === p.label ? "✓" : "✗";
    return h("tr", {}, h("td", {}, p.text ?? ""), h("td", {}, p.gold ?? "–"), h("td", {}, p.label ?? ""), h("td", { class: "num" }, fmt(p.score)), h("td", {}, ok));
  });
  const head = ner ? ["sentence", "gold entities", "predicted", ""] : gen ? ["prompt", "reference", "generated"] : ["text", "gold", "predicted", "score", ""];
  return h("div", { class: "card" }, h("h2", {}, "Samples"), h("p", { class: "muted" }, `Most confident mistakes first (${rows.length} shown).`),
    h("div", { class: "scroll" }, h("table", { class: "compact samples" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows))));
}

function explainBox(run, task) {
  if (!["classification", "token_classification", "causal_lm"].includes(task)) return null;
  const text = h("textarea", { id: "explain-text", placeholder: task === "causal_lm" ? "A prompt" : "A text to explain" });
  const method = h("select", { id: "explain-method" }, ["", "integrated_gradients", "occlusion", "gradient_x_input", "attention"].map((m) => h("option", { value: m }, m || "default method")));
  const out = h("div", { id: "explain-out" });
  const btn = h("button", { onclick: async () => {
    btn.disabled = true; fill(out, h("p", { class: "muted" }, "Explaining… (the model loads on first use)"));
    try {
      const r = await api("/api/explain", { body: { run, text: text.value, method: method.value || null } });
      fill(out, ...(r.explanations.length ? r.explanations.map(attributionView) : [h("p", { class: "muted" }, "Nothing to explain (no entity found).")]));
    } catch (e) { fill(out, errorBox(e)); }
    btn.disabled = false;
  } }, "Explain");
  return h("div", { class: "card" }, h("h2", {}, "Explain a text"),
    h("p", { class: "muted" }, "Token attributions by captum: green pushed towards the prediction, red against it."),
    text, h("div", { class: "row" }, method, btn), out);
}

async function viewRun(name) {
  const container = h("div", {});
  async function load() {
    const d = await api("/api/run?name=" + encodeURIComponent(name));
    const r = d.row || {}, rec = d.record || {};
    const stats = [["task", r.task], ["model", r.model], ["tuning", r.tuning || r.kind], ["status", r.status], ["steps", fmt(r.steps)], ["time", duration(r.seconds)]];
    Object.entries(r.metrics || {}).filter(([k]) => SHOWN.includes(k)).slice(0, 4).forEach(([k, v]) => stats.push([`${r.split || ""} ${k}`, fmt(v)]));
    const report = h("div", { id: "report" });
    fill(container, 
      h("div", { class: "row" }, h("h1", {}, name), badge(r.status || "?"),
        d.report ? h("button", { class: "secondary", onclick: async () => {
          const res = await api("/api/report?name=" + encodeURIComponent(name), { raw: true });
          fill(report, h("iframe", { class: "report", sandbox: "", srcdoc: await res.text(), title: "report" }));
        } }, "Show the full report") : null,
        h("a", { href: "#/play/" + encodeURIComponent(name) }, "Open in the playground")),
      h("div", { class: "summary" }, stats.map(([k, v]) => h("div", { class: "stat" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v ?? "–")))),
      h("h2", {}, "Curves"), curves(d.metrics),
      Object.keys(d.results).length ? h("h2", {}, "Evaluation") : null,
      h("div", { class: "grid2" }, Object.entries(d.results).filter(([, m]) => m && typeof m === "object").map(([sp, m]) => splitSection(sp, m))),
      samplesTable(d.predictions),
      explainBox(name, r.task || rec.task),
      h("h2", {}, "Config"), h("pre", { class: "config" }, d.config || "(no config.yaml)"),
      report);
    return r.status;
  }
  setMain(container);
  const status = await load();
  if (status === "running") every(async () => { if (!document.getElementById("explain-text")?.value && !document.querySelector("iframe.report")) await load(); });
}

// ---- views: runs side by side -------------------------------------------------------------------
function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, prefix + k + ".", out);
    else out[prefix + k] = Array.isArray(v) ? JSON.stringify(v) : v;
  }
  return out;
}

async function viewCompare(names) {
  const all = await Promise.all(names.map((n) => api("/api/run?name=" + encodeURIComponent(n))));
  const metricNames = [...new Set(all.flatMap((d) => Object.keys(d.row.metrics || {})))];
  const metricRows = metricNames.map((m) => {
    const vals = all.map((d) => (d.row.metrics || {})[m]);
    const lower = /loss|perplexity|seconds/.test(m);
    const nums = vals.filter((v) => typeof v === "number");
    const best = nums.length > 1 ? (lower ? Math.min(...nums) : Math.max(...nums)) : null;
    return h("tr", {}, h("td", {}, m), vals.map((v) => h("td", { class: "num", style: v === best ? "font-weight:700" : "" }, fmt(v))));
  });
  const configs = all.map((d) => flatten(d.config_data || {}));
  let cfgKeys = [...new Set(configs.flatMap(Object.keys))].filter((k) => new Set(configs.map((c) => JSON.stringify(c[k]))).size > 1);
  if (!cfgKeys.length) cfgKeys = [];
  const loss = lineChart("training loss", all.map((d, i) => ({ name: names[i], points: d.metrics.filter((r) => r.kind === "train").map((r) => [r.step, r.loss]) })), { xlabel: "step" });
  setMain(h("div", {}, h("h1", {}, "Runs side by side"),
    h("div", { class: "card" }, h("table", { id: "compare-table" }, h("thead", {}, h("tr", {}, h("th", {}, "metric"), names.map((n) => h("th", { class: "num" }, runLink(n))))),
      h("tbody", {}, h("tr", {}, h("td", {}, "task"), all.map((d) => h("td", { class: "num" }, d.row.task || "?"))),
        h("tr", {}, h("td", {}, "model"), all.map((d) => h("td", { class: "num" }, d.row.model || "?"))),
        h("tr", {}, h("td", {}, "time"), all.map((d) => h("td", { class: "num" }, duration(d.row.seconds)))), metricRows))),
    h("div", { class: "card" }, loss),
    h("div", { class: "card" }, h("h2", {}, "Settings that differ"), cfgKeys.length ? h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "key"), names.map((n) => h("th", {}, n)))),
      h("tbody", {}, cfgKeys.map((k) => h("tr", {}, h("td", {}, k), configs.map((c) => h("td", {}, fmt(c[k]))))))) : h("p", { class: "muted" }, "None: the runs share every setting in their records."))));
}

// ---- views: compare / tune studies -----------------------------------------------------------------
async function viewStudy(kind, name) {
  const d = await api(`/api/study?kind=${kind}&name=${encodeURIComponent(name)}`);
  const parts = [h("h1", {}, `${kind === "compare" ? "lmforge compare" : "lmforge tune"}: ${name}`)];
  if (kind === "compare") {
    const rows = (d.compare.rows || []).filter((r) => r && typeof r === "object");
    const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => !["run", "error_detail"].includes(k)).slice(0, 12);
    parts.push(h("p", {}, `Metric ${d.compare.metric || "?"} on ${fmt(d.compare.evaluated)} rows.`),
      d.compare.recommendation ? h("p", { class: "recommendation" }, h("b", {}, "Recommendation: "), d.compare.recommendation.text || "") : null,
      h("div", { class: "card" }, h("table", { class: "compact" }, h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, cols.map((c) => h("td", { class: typeof r[c] === "number" ? "num" : "" }, typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : fmt(r[c])))))))));
  } else {
    const trials = d.trials || [];
    const cols = trials.length ? Object.keys(trials[0]) : [];
    const valueCol = cols.find((c) => c === "value");
    parts.push(h("div", { class: "card" }, lineChart("trial values", [{ name: "value", points: trials.map((t, i) => [Number(t.trial ?? i), parseFloat(t[valueCol])]) }], { xlabel: "trial" })),
      h("div", { class: "card" }, h("table", { class: "compact trials" }, h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
        h("tbody", {}, trials.map((t) => h("tr", { class: d.best_trial !== null && Number(t.trial) === d.best_trial ? "best" : "" }, cols.map((c) => h("td", {}, t[c]))))))),
      d.best_yaml ? h("div", {}, h("h2", {}, "best.yaml"), h("pre", {}, d.best_yaml)) : null);
  }
  if (d.report) {
    const res = await api(`/api/report?name=${encodeURIComponent(name)}`, { raw: true });
    parts.push(h("h2", {}, "Report"), h("iframe", { class: "report", sandbox: "", srcdoc: await res.text(), title: "report" }));
  }
  setMain(h("div", {}, parts));
}

// ---- views: playground ---------------------------------------------------------------------------
async function viewPlay(chosen) {
  const [runsData, status] = await Promise.all([api("/api/runs"), api("/api/playground")]);
  const options = [...runsData.runs.filter((r) => ["classification", "token_classification", "causal_lm"].includes(r.task) && !r.problem).map((r) => r.run),
    ...state.info.generators];
  const select = h("select", { id: "play-model" }, h("option", { value: "" }, "choose a model…"), options.map((o) => h("option", { value: o }, o)));
  const statusLine = h("span", { id: "play-status", class: "muted" });
  const area = h("div", { id: "play-area" });
  const load = h("button", { id: "play-load", onclick: async () => {
    if (!select.value) return;
    try { show(await api("/api/playground", { body: { model: select.value } })); } catch (e) { fill(area, errorBox(e)); }
  } }, "Load");
  let shownFor = null;
  function show(st) {
    fill(statusLine, st.model ? h("span", {}, `${st.model}: `, badge(st.status), st.kind ? ` ${st.kind}` : "") : "no model loaded");
    if (st.error) fill(area, h("p", { class: "error" }, st.error));
    if (st.status === "loading") { setTimeout(() => api("/api/playground").then(show).catch(() => {}), 500); return; }
    if (st.status !== "ok" || shownFor === st.model + st.kind) return;
    shownFor = st.model + st.kind;
    select.value = st.model;
    fill(area, st.kind === "generation" ? chatPanel(st) : taskPanel(st));
  }
  setMain(h("div", {}, h("h1", {}, "Playground"),
    h("div", { class: "card" }, h("div", { class: "row" }, h("div", { style: "min-width:320px" }, select), load, statusLine)), area));
  stopTimer();
  if (chosen && chosen !== status.model) { select.value = chosen; load.click(); } else show(status);
}

function taskPanel(st) {
  const classify = st.kind === "classification";
  const text = h("textarea", { id: "play-text", placeholder: classify ? "A text to classify" : "A sentence to tag" });
  const out = h("div", { id: "play-out" });
  const go = h("button", { id: "play-go", onclick: async () => {
    go.disabled = true;
    try {
      if (classify) {
        const r = await api("/play/v1/classify", { body: { model: st.served_as, input: text.value, top_k: 10 } });
        const c = r.data[0];
        fill(out, h("p", {}, "Predicted: ", h("b", { class: "predicted" }, c.label), ` (${fmt(c.score)})`),
          h("table", { class: "compact scores" }, h("tbody", {}, c.top_k.map((x) => h("tr", {}, h("td", {}, x.label),
            h("td", {}, h("div", { class: "bar" }, h("div", { style: `width:${(100 * x.score).toFixed(1)}%` }))), h("td", { class: "num" }, fmt(x.score)))))));
      } else {
        const r = await api("/play/v1/ner", { body: { model: st.served_as, input: text.value } });
        const ents = r.data[0].entities, t = text.value, pieces = [];
        let at = 0;
        for (const e of ents) {
          pieces.push(t.slice(at, e.start), h("span", { class: "ent", title: fmt(e.score) }, t.slice(e.start, e.end), h("sub", {}, e.label)));
          at = e.end;
        }
        pieces.push(t.slice(at));
        fill(out, h("p", { class: "tagged" }, pieces), ents.length ? null : h("p", { class: "muted" }, "No entity found."));
      }
    } catch (e) { fill(out, errorBox(e)); }
    go.disabled = false;
  } }, classify ? "Classify" : "Tag entities");
  const why = h("div", {});
  const explain = h("button", { class: "secondary", onclick: async () => {
    explain.disabled = true; fill(why, h("p", { class: "muted" }, "Explaining…"));
    try {
      const r = await api("/api/explain", { body: { run: st.model, text: text.value } });
      fill(why, ...r.explanations.map(attributionView));
    } catch (e) { fill(why, errorBox(e)); }
    explain.disabled = false;
  } }, "Explain");
  return h("div", { class: "card" }, text, h("div", { class: "row", style: "margin-top:8px" }, go, explain), out, why);
}

function chatPanel(st) {
  const log = h("div", { class: "chat", id: "chat-log" });
  const input = h("textarea", { id: "chat-input", placeholder: "Say something (Enter sends, Shift+Enter for a new line)" });
  const maxTokens = h("input", { type: "text", id: "chat-max", value: "128", style: "width:80px" });
  const temperature = h("input", { type: "text", id: "chat-temperature", value: "0.3", style: "width:80px" });
  const messages = [];
  const send = h("button", { id: "chat-send", onclick: async () => {
    const text = input.value.trim();
    if (!text) return;
    input.value = ""; send.disabled = true;
    messages.push({ role: "user", content: text });
    log.append(h("div", { class: "msg user" }, text));
    const reply = h("div", { class: "msg assistant" });
    log.append(reply);
    let content = "";
    try {
      const res = await api("/play/v1/chat/completions", { raw: true, body: { model: st.served_as, messages, stream: true, max_tokens: parseInt(maxTokens.value, 10) || 128,
        temperature: Number.isFinite(parseFloat(temperature.value)) ? parseFloat(temperature.value) : 0.3 } });
      if (!res.ok) { const e = await res.json().catch(() => null); throw new Error((e && e.error && e.error.message) || res.statusText); }
      const reader = res.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const payload = line.slice(5).trim();
            if (payload === "[DONE]") continue;
            const chunk = JSON.parse(payload);
            if (chunk.error) throw new Error(chunk.error.message);
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.content) { content += delta.content; reply.textContent = content; log.scrollTop = log.scrollHeight; }
          }
        }
      }
      messages.push({ role: "assistant", content });
      reply.setAttribute("data-done", "1");
    } catch (e) { fill(reply, errorBox(e)); messages.pop(); }
    send.disabled = false;
  } }, "Send");
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); send.click(); } });
  const reset = h("button", { class: "secondary", onclick: () => { messages.length = 0; log.replaceChildren(); } }, "New chat");
  return h("div", { class: "card" }, h("p", { class: "muted" }, `Chat with ${st.model}, streamed token by token.`), log, input,
    h("div", { class: "row", style: "margin-top:8px" }, send, reset, h("span", { class: "muted" }, "max tokens"), maxTokens, h("span", { class: "muted" }, "temperature"), temperature));
}

// ---- views: jobs -------------------------------------------------------------------------------------
async function viewJobs() {
  const name = h("input", { type: "text", id: "job-name", placeholder: "my-run (the folder under the runs root)" });
  const config = h("select", { id: "job-config" }, h("option", { value: "" }, "paste a YAML config below…"), state.info.configs.map((c) => h("option", { value: c }, c)));
  const yaml = h("textarea", { id: "job-yaml", placeholder: "task: classification\ndata: {train: data/train.jsonl, split: 0.1}\nmodel: minilm\ntrain: {epochs: 1}", style: "min-height:120px" });
  const overrides = h("textarea", { id: "job-overrides", placeholder: "train.epochs=1\ntrain.lr=3e-5" });
  const formError = h("p", { class: "error", id: "job-error" });
  const list = h("div", { id: "jobs-list" });
  const start = h("button", { id: "job-start", onclick: async () => {
    formError.textContent = "";
    const body = { name: name.value.trim(), overrides: overrides.value.split("\n").map((x) => x.trim()).filter(Boolean) };
    if (config.value) body.config = config.value; else body.yaml = yaml.value;
    try { await api("/api/jobs", { body }); name.value = ""; await refresh(); } catch (e) { formError.textContent = e.message; }
  } }, "Start training");
  async function refresh() {
    const d = await api("/api/jobs");
    fill(list, ...(d.jobs.length ? d.jobs.map(jobCard) : [h("p", { class: "muted" }, "No job started from this page yet.")]));
  }
  function jobCard(j) {
    const p = j.progress || {};
    const pct = p.total_steps ? Math.min(100, (100 * p.step) / p.total_steps) : 0;
    return h("div", { class: "card job", "data-job": j.id, "data-status": j.status },
      h("div", { class: "row" }, h("b", {}, j.name), badge(j.status), h("span", { class: "muted" }, `${j.config} · ${duration(j.seconds)}`),
        ["done", "stopped"].includes(j.status) || (j.status === "failed" && p.step) ? runLink(j.name) : null,
        j.status === "running" || j.status === "stopping" ? h("button", { class: "secondary", onclick: async () => { await api(`/api/jobs/${encodeURIComponent(j.id)}/stop`, { body: {} }); refresh(); } },
          j.status === "stopping" ? "Kill" : "Stop") : null),
      h("div", { class: "row" }, h("div", { class: "bar", style: "flex:1" }, h("div", { style: `width:${pct.toFixed(1)}%` })),
        h("span", { class: "muted" }, `step ${p.step ?? 0}/${p.total_steps ?? "?"}${p.loss !== undefined ? " · loss " + fmt(p.loss) : ""}`)),
      j.error ? h("p", { class: "error" }, j.error) : null,
      j.log && j.log.length ? h("details", {}, h("summary", {}, "log"), h("pre", {}, j.log.join("\n"))) : null);
  }
  setMain(h("div", {}, h("h1", {}, "Jobs"),
    h("div", { class: "card" }, h("h2", {}, "Train a model"),
      h("label", { for: "job-name" }, "Run name"), name,
      h("label", { for: "job-config" }, "Config"), config,
      h("label", { for: "job-yaml" }, "…or the config's YAML"), yaml,
      h("label", { for: "job-overrides" }, "Overrides, one key=value per line"), overrides,
      h("p", {}, start), formError),
    h("h2", {}, "Jobs started here"), list));
  await refresh();
  every(refresh);
}

// ---- router ----------------------------------------------------------------------------------------
async function route() {
  stopTimer();
  const hash = location.hash.replace(/^#\/?/, "");
  const [view, ...rest] = hash.split("/");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === (view || "runs") || (view === "run" && a.dataset.view === "runs")));
  try {
    if (!state.info) state.info = await api("/api/info");
    document.getElementById("where").textContent = state.info.runs;
    const arg = rest.join("/");
    if (view === "run") await viewRun(decodeURIComponent(arg));
    else if (view === "compare") await viewCompare(arg.split(",").map(decodeURIComponent));
    else if (view === "study") await viewStudy(rest[0], decodeURIComponent(rest.slice(1).join("/")));
    else if (view === "play") await viewPlay(arg ? decodeURIComponent(arg) : null);
    else if (view === "jobs") await viewJobs();
    else await viewRuns();
  } catch (e) {
    if (!/API key/.test(e.message)) setMain(errorBox(e));
  }
}
window.addEventListener("hashchange", route);
route();
