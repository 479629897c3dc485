// LineGuard's operator page: one script, no framework, no network beyond this service's own API.
// Views (by the URL's hash): #/ lines overview, #/line/<name> one line, #/simulator.
// Every request goes through api(), which adds the operator's key and turns an error answer into a
// message that shows the API's own detail (what is wrong and how to fix it).
// One file of about 740 lines, on purpose: the page is served as it is (no bundler, no build step, so
// it works offline and a reader sees what runs), and its sections below are one view each.
"use strict";

const KEY_STORE = "lineguard.key";
const OPERATOR_STORE = "lineguard.operator";
const state = { window: "24h", timer: null, sim: null };

// --- small helpers -------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}
const $ = (sel, root = document) => root.querySelector(sel);
const pct = (x) => (x === null || x === undefined ? "—" : `${(100 * x).toFixed(1)}%`);
const num = (x, digits = 4) => (x === null || x === undefined ? "—" : Number(x).toPrecision(digits));
const when = (iso) => new Date(iso).toLocaleTimeString();
// show a file or blob in <img> elements, freeing the object URL of the picture it replaces
function showPicture(blob, ...images) {
  const old = images[0].src;
  const url = URL.createObjectURL(blob);
  for (const img of images) img.src = url;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}
const statCard = (label, value, id) => h("div", { class: "card", id },
  h("div", { class: "value" }, value), h("div", { class: "label" }, label));

class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

const HINTS = {
  401: "enter an API key (button at the top right)",
  403: "this key may not do that: ask an administrator for a key with the right scope or lines",
  404: "not found",
  409: "the service's configuration does not allow this",
  413: "too large for the service's limits",
  415: "wrong kind of data for this line",
  422: "the service could not use what was sent",
  503: "the service is busy or restarting: retry shortly",
};

// an answer of any line kind -> whether it flags the part, and the score its threshold applies to
function verdict(a) {
  if (a.prediction !== undefined) return { flagged: a.is_defect === true, score: a.defect_confidence }; // classifier
  return { flagged: a.is_anomaly, score: a.anomaly_score !== undefined ? a.anomaly_score : a.score }; // image, sensor
}

function describe(err) {
  if (!(err instanceof ApiError)) return `unexpected error in the page: ${err && err.message ? err.message : err}`;
  if (err.status === 0) return err.detail;
  const hint = HINTS[err.status] ? ` (${HINTS[err.status]})` : "";
  const retry = err.retryAfter ? ` Retry after ${err.retryAfter} s.` : "";
  return `Error ${err.status}: ${err.detail}${hint}.${retry}`;
}

async function errorDetail(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {
      return body.detail.map((p) => `${(p.loc || []).join(".")}: ${p.msg}`).join("; ");
    }
    return text.slice(0, 300);
  } catch {
    return text.slice(0, 300) || res.statusText;
  }
}

// options: fetch's, plus json (a body sent as JSON) and blob (read the answer as a Blob)
async function api(path, { json, blob, ...options } = {}) {
  const headers = new Headers(options.headers || {});
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    options.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError(0, `the service cannot be reached (${e.message}): is it running?`);
  }
  if (!res.ok) {
    const err = new ApiError(res.status, await errorDetail(res), res.headers.get("Retry-After"));
    if (res.status === 401) askForKey(err.detail);
    throw err;
  }
  if (blob) return res.blob();
  return res.json();
}

function showMessage(el, err) {
  const target = el || $("#banner");
  if (!err) {
    target.hidden = true;
    target.textContent = "";
    return;
  }
  target.textContent = describe(err);
  target.hidden = false;
}
const sectionMessage = (el) => el.querySelector("[data-msg]");

// --- API key -------------------------------------------------------------------------------------
function keyLabel() {
  const key = localStorage.getItem(KEY_STORE);
  $("#key-button").textContent = key ? `API key: ${key.split("_").slice(0, 2).join("_")}…` : "API key: none";
}

function askForKey(reason) {
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = reason || "";
  $("#key-reason").className = reason ? "msg error" : "msg";
  $("#key-reason").hidden = !reason;
  $("#key-input").value = "";
  if (!dialog.open) dialog.showModal();
}

function setupKeyDialog() {
  $("#key-button").addEventListener("click", () => askForKey(""));
  $("#key-dialog").addEventListener("close", () => {
    const choice = $("#key-dialog").returnValue;
    if (choice === "save" && $("#key-input").value.trim()) {
      localStorage.setItem(KEY_STORE, $("#key-input").value.trim());
    } else if (choice === "forget") {
      localStorage.removeItem(KEY_STORE);
    } else {
      return;
    }
    keyLabel();
    route();
  });
  keyLabel();
}

// --- histogram (SVG) -----------------------------------------------------------------------------
const SERIES = ["good", "defective", "unlabelled"];

function drawHistogram(svg, edges, counts, threshold, candidate) {
  svg.replaceChildren();
  const W = 480, H = 200, left = 34, bottom = 22, top = 8;
  const n = edges.length - 1;
  if (n < 1) return;
  const totals = Array.from({ length: n }, (_, i) => SERIES.reduce((s, k) => s + ((counts[k] || [])[i] || 0), 0));
  const peak = Math.max(1, ...totals);
  const marks = [threshold, candidate].filter((v) => v !== null && v !== undefined);
  const lo = Math.min(edges[0], ...marks), hi = Math.max(edges[n], ...marks); // the axis shows both lines
  const x = (v) => left + ((v - lo) / (hi - lo || 1)) * (W - left - 4);
  const y = (c) => H - bottom - (c / peak) * (H - bottom - top);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  for (let i = 0; i < n; i++) {
    let base = 0;
    for (const k of SERIES) {
      const c = (counts[k] || [])[i] || 0;
      if (!c) continue;
      add("rect", {
        x: x(edges[i]) + 0.5, width: Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1),
        y: y(base + c), height: y(base) - y(base + c), fill: `var(--${k})`, "data-series": k,
      });
      base += c;
    }
  }
  add("line", { x1: left, x2: W - 4, y1: H - bottom, y2: H - bottom, stroke: "#9aa5b1" });
  add("text", { x: left, y: H - 6 }, num(lo, 3));
  add("text", { x: W - 4, y: H - 6, "text-anchor": "end" }, num(hi, 3));
  add("text", { x: 2, y: top + 8 }, String(peak));
  const mark = (v, colour, name, dash) => {
    if (v === null || v === undefined) return;
    add("line", { x1: x(v), x2: x(v), y1: top, y2: H - bottom, stroke: colour, "stroke-width": 2,
      "stroke-dasharray": dash || "", "data-mark": name });
  };
  mark(threshold, "var(--ink)", "threshold");
  mark(candidate, "var(--candidate)", "candidate", "5 3");
}

function bins(values, threshold, count = 20) {
  const all = values.concat([threshold]);
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi <= lo) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.02;
  lo -= pad; hi += pad;
  return Array.from({ length: count + 1 }, (_, i) => lo + ((hi - lo) * i) / count);
}

function countInto(edges, values) {
  const out = new Array(edges.length - 1).fill(0);
  for (const v of values) {
    let i = Math.floor(((v - edges[0]) / (edges[edges.length - 1] - edges[0])) * (edges.length - 1));
    out[Math.min(Math.max(i, 0), out.length - 1)] += 1;
  }
  return out;
}

// --- overview ------------------------------------------------------------------------------------
async function showOverview(view) {
  view.append($("#t-overview").content.cloneNode(true));
  const msg = sectionMessage(view);
  const body = $("#lines-table tbody", view);
  const refresh = async () => {
    let lines;
    try {
      lines = await api("/v1/lines");
      showMessage(msg, null);
    } catch (err) {
      showMessage(msg, err);
      return;
    }
    const rows = lines.map((line) => {
      const cells = {
        answers: h("td", { class: "num" }, "…"), anomaly: h("td", { class: "num" }, "…"),
        miss: h("td", { class: "num" }, "…"), over: h("td", { class: "num" }, "…"),
        labelled: h("td", { class: "num" }, "…"), drift: h("td", {}, "…"),
      };
      const row = h("tr", { "data-line": line.line },
        h("td", {}, h("a", { href: `#/line/${encodeURIComponent(line.line)}` }, line.line)),
        h("td", {}, line.kind), h("td", {}, line.version), h("td", { class: "num" }, num(line.threshold)),
        cells.answers, cells.anomaly, cells.miss, cells.over, cells.labelled, cells.drift);
      fillLineFigures(line.line, cells);
      return row;
    });
    body.replaceChildren(...rows);
    if (!lines.length) body.append(h("tr", {}, h("td", { colspan: 10 }, "No lines yet: fit one with `lineguard fit`.")));
  };
  await refresh();
  state.timer = setInterval(refresh, 15000);
}

async function fillLineFigures(line, cells) {
  const name = encodeURIComponent(line);
  const [stats, drift] = await Promise.allSettled([
    api(`/v1/lines/${name}/stats?window=${state.window}`),
    api(`/v1/lines/${name}/drift`),
  ]);
  if (stats.status === "fulfilled") {
    const s = stats.value;
    cells.answers.textContent = s.predictions;
    cells.anomaly.textContent = pct(s.anomaly_rate);
    cells.miss.textContent = pct(s.confusion ? s.confusion.miss_rate : null);
    cells.over.textContent = pct(s.confusion ? s.confusion.over_detection_rate : null);
    cells.labelled.textContent = s.labelled;
  } else {
    for (const k of ["answers", "anomaly", "miss", "over", "labelled"]) {
      cells[k].textContent = "—";
      cells[k].title = describe(stats.reason);
    }
  }
  if (drift.status === "fulfilled") {
    const status = drift.value.status;
    const reasons = Object.entries(drift.value.measures || {}).map(([k, m]) => `${k}: ${m.reason || m.status}`);
    const label = status === "insufficient_data" ? "too few answers" : status;
    cells.drift.replaceChildren(h("span", {
      class: `badge ${status === "insufficient_data" ? "none" : status}`, "data-status": status, title: reasons.join("\n"),
    }, label));
  } else {
    cells.drift.textContent = "—";
    cells.drift.title = describe(drift.reason);
  }
}

// --- one line ------------------------------------------------------------------------------------
async function showLine(view, line) {
  view.append($("#t-line").content.cloneNode(true));
  const name = encodeURIComponent(line);
  let detail;
  try {
    detail = await api(`/v1/lines/${name}`);
  } catch (err) {
    view.replaceChildren(h("p", { class: "msg error", role: "alert" }, describe(err)), h("p", {}, h("a", { href: "#/" }, "all lines")));
    return;
  }
  $("#line-title", view).textContent = `${detail.line}`;
  showFacts(view, detail);
  if (detail.refused_version) {
    const refused = $("#line-refused", view);
    refused.textContent = `Version ${detail.refused_version} was refused (${detail.refused_reason}); ${detail.version} serves.`;
    refused.hidden = false;
  }
  const ctx = { view, name, detail, candidate: null, histogram: null };
  setupScoring(ctx);
  setupThreshold(ctx);
  $("#operator", view).value = localStorage.getItem(OPERATOR_STORE) || "";
  $("#operator", view).addEventListener("change", (e) => localStorage.setItem(OPERATOR_STORE, e.target.value));
  await Promise.all([refreshAnswers(ctx), refreshRates(ctx)]);
  state.timer = setInterval(() => refreshAnswers(ctx), 15000);
}

function showFacts(view, detail) {
  $("#line-facts", view).textContent = [
    detail.kind, `version ${detail.version}`, `threshold ${num(detail.threshold)}`,
    detail.head && `head ${detail.head}`, detail.backbone && `backbone ${detail.backbone}`,
    detail.image_auroc !== null && detail.image_auroc !== undefined && `test AUROC ${num(detail.image_auroc, 3)}`,
  ].filter(Boolean).join(" · ");
}

// what a new answer changes; feedback also changes the rates
const refreshAnswers = (ctx) => Promise.all([refreshStats(ctx), refreshHistory(ctx), refreshHistogram(ctx)]);

async function refreshStats(ctx) {
  const box = $("#line-stats", ctx.view);
  try {
    const s = await api(`/v1/lines/${ctx.name}/stats?window=${state.window}`);
    const c = s.confusion || {};
    box.replaceChildren(
      statCard(`answers (${state.window})`, s.predictions, "stat-answers"),
      statCard("anomaly rate", pct(s.anomaly_rate), "stat-anomaly"),
      statCard(`miss rate (${c.true_positive + c.false_negative || 0} defective)`, pct(c.miss_rate), "stat-miss"),
      statCard(`over-detection (${c.false_positive + c.true_negative || 0} good)`, pct(c.over_detection_rate), "stat-over"),
      statCard("labelled", s.labelled, "stat-labelled"),
      statCard("latency p50", s.latency_ms && s.latency_ms.p50 !== null ? `${s.latency_ms.p50.toFixed(0)} ms` : "—", "stat-latency"),
      // sensor lines count alarm events (a stream's k-of-n alarm starting and ending) as well as readings
      ...(s.alarms ? [statCard(`alarms (${s.alarms.ended} ended)`, s.alarms.started, "stat-alarms")] : []),
    );
  } catch (err) {
    box.replaceChildren(h("p", { class: "msg error" }, describe(err)));
  }
}

function feedbackButtons(ctx, record, msg) {
  const labels = ctx.detail.classes || ["ok", "ng"];
  const give = async (label) => {
    try {
      const body = { label };
      const operator = localStorage.getItem(OPERATOR_STORE);
      if (operator) body.operator = operator;
      await api(`/v1/predictions/${record.id}/feedback`, { method: "POST", json: body });
      showMessage(msg, null);
      await Promise.all([refreshAnswers(ctx), refreshRates(ctx)]);
    } catch (err) {
      showMessage(msg, err);
    }
  };
  if (!ctx.detail.classes) {
    return [
      h("button", { type: "button", class: "ok", "data-label": "ok", onclick: () => give("ok") }, "OK"),
      " ",
      h("button", { type: "button", class: "ng", "data-label": "ng", onclick: () => give("ng") }, "NG"),
    ];
  }
  const select = h("select", { "aria-label": "true class" }, labels.map((l) => h("option", { value: l }, l)));
  select.value = record.decision;
  return [select, " ", h("button", { type: "button", onclick: () => give(select.value) }, "Set")];
}

async function refreshHistory(ctx) {
  const section = $("#history-table", ctx.view).closest("section");
  const msg = sectionMessage(section);
  const body = $("#history-table tbody", ctx.view);
  try {
    const page = await api(`/v1/lines/${ctx.name}/history?limit=15`);
    body.replaceChildren(...page.records.map((r) => h("tr", { "data-id": r.id },
      h("td", {}, when(r.timestamp)),
      h("td", {}, r.source || r.sensor_id || "—"),
      h("td", {}, h("span", { class: `badge ${r.is_anomaly ? "ng" : "ok"}` }, r.decision)),
      h("td", { class: "num" }, num(r.score)),
      h("td", { "data-verdict": "" }, r.feedback ? r.feedback.label : "—"),
      h("td", {}, feedbackButtons(ctx, r, msg)),
    )));
    if (!page.records.length) body.append(h("tr", {}, h("td", { colspan: 6 }, "No answers yet in the history.")));
  } catch (err) {
    showMessage(msg, err);
  }
}

async function refreshHistogram(ctx) {
  const msg = sectionMessage($("#threshold-panel", ctx.view));
  try {
    ctx.histogram = await api(`/v1/lines/${ctx.name}/histogram?window=${state.window}`);
    redrawHistogram(ctx);
  } catch (err) {
    showMessage(msg, err);
  }
}

function redrawHistogram(ctx) {
  const hgm = ctx.histogram;
  if (!hgm) return;
  drawHistogram($("#histogram", ctx.view), hgm.edges, hgm.counts, hgm.threshold, ctx.candidate);
}

function setupThreshold(ctx) {
  const slider = $("#threshold-slider", ctx.view);
  let pending = null;
  slider.addEventListener("input", () => {
    if (!ctx.range) return; // the rates (and the slider's range) are not in yet
    ctx.candidate = sliderValue(ctx);
    $("#threshold-value", ctx.view).textContent = num(ctx.candidate, 5);
    redrawHistogram(ctx);
    clearTimeout(pending);
    pending = setTimeout(() => refreshRates(ctx, ctx.candidate), 120);
  });
  $("#threshold-apply", ctx.view).addEventListener("click", async () => {
    const done = $("#threshold-done", ctx.view);
    const msg = sectionMessage($("#threshold-panel", ctx.view));
    done.hidden = true;
    if (!ctx.range) {
      showMessage(msg, new ApiError(0, "the rates are still loading: try again in a moment"));
      return;
    }
    try {
      const value = Number(num(sliderValue(ctx), 6));
      const changed = await api(`/v1/lines/${ctx.name}/threshold`, {
        method: "PUT", json: { threshold: value, note: "set from the web page" },
      });
      showMessage(msg, null);
      done.textContent = `Threshold ${num(changed.previous_threshold)} → ${num(changed.threshold)}: version ${changed.version} now serves (was ${changed.previous_version}).`;
      done.hidden = false;
      ctx.detail = await api(`/v1/lines/${ctx.name}`);
      ctx.candidate = null;
      showFacts(ctx.view, ctx.detail);
      await Promise.all([refreshHistogram(ctx), refreshRates(ctx)]);
    } catch (err) {
      showMessage(msg, err);
    }
  });
}

function sliderValue(ctx) {
  const slider = $("#threshold-slider", ctx.view);
  const r = ctx.range;
  return r.min + ((r.max - r.min) * Number(slider.value)) / Number(slider.max);
}

async function refreshRates(ctx, threshold) {
  const panel = $("#threshold-panel", ctx.view);
  const msg = sectionMessage(panel);
  const query = threshold === undefined || threshold === null ? "" : `&threshold=${threshold}`;
  let rates, current;
  try {
    [rates, current] = await Promise.all([
      api(`/v1/lines/${ctx.name}/threshold/rates?window=30d${query}`),
      query ? api(`/v1/lines/${ctx.name}/threshold/rates?window=30d`) : null,
    ]);
  } catch (err) {
    showMessage(msg, err);
    $("#threshold-tools", ctx.view).hidden = err.status === 422; // e.g. a classifier without a normal class
    return;
  }
  showMessage(msg, null);
  current = current || rates;
  if (!query) {
    ctx.range = rates.range;
    const slider = $("#threshold-slider", ctx.view);
    slider.value = String(Math.round(((rates.threshold - ctx.range.min) / (ctx.range.max - ctx.range.min)) * Number(slider.max)));
    $("#threshold-value", ctx.view).textContent = num(rates.threshold, 5);
    $("#threshold-current", ctx.view).textContent = num(rates.current_threshold, 5);
  }
  const names = { calibration: "fit data (held-out good + test)", feedback: "operator feedback (30 d)", combined: "both" };
  $("#rates-table tbody", ctx.view).replaceChildren(...Object.keys(names).map((k) => {
    const now = current[k], then = rates[k];
    const cell = (a, b) => h("td", { class: "num" }, query ? `${pct(b)} (now ${pct(a)})` : pct(a));
    return h("tr", { "data-source": k }, h("td", {}, names[k]), h("td", { class: "num" }, `${then.defective} ng / ${then.good} ok`),
      cell(now.miss_rate, then.miss_rate), cell(now.over_detection_rate, then.over_detection_rate));
  }));
}

// scoring a part: image upload or drop, or a typed sensor reading
function setupScoring(ctx) {
  const { view, detail } = ctx;
  const msg = sectionMessage($("#score-panel", view));
  if (detail.kind === "sensor-anomaly") {
    $("#sensor-input", view).hidden = false;
    $("#vector-help", view).textContent = `${detail.features.length} numbers in this order: ${detail.features.join(", ")}`;
    $("#sensor-input", view).addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = $("#vector", view).value.trim();
      const values = text.split(/[\s,;]+/).filter(Boolean).map(Number);
      const bad = text.split(/[\s,;]+/).filter(Boolean).filter((v) => !Number.isFinite(Number(v)));
      if (!text || bad.length) {
        showMessage(msg, new ApiError(422, bad.length ? `not numbers: ${bad.slice(0, 5).join(" ")}` : "type the reading's numbers first"));
        return;
      }
      await score(ctx, () => api(`/v1/lines/${ctx.name}/predict`, { method: "POST", json: { values, sensor_id: "web" } }), null);
    });
    return;
  }
  $("#image-input", view).hidden = false;
  const drop = $("#drop", view);
  const send = (file) => {
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("sensor_id", "web");
    const heatmap = detail.kind === "image-anomaly" ? "?heatmap=true" : "";
    score(ctx, () => api(`/v1/lines/${ctx.name}/predict${heatmap}`, { method: "POST", body: form }), file);
  };
  $("#file", view).addEventListener("change", (e) => send(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    send(e.dataTransfer.files[0]);
  });
  $("#overlay-opacity", view).addEventListener("input", (e) => { $("#overlay", view).style.opacity = e.target.value / 100; });
}

async function score(ctx, call, file) {
  const { view } = ctx;
  const msg = sectionMessage($("#score-panel", view));
  let answer;
  try {
    answer = await call();
  } catch (err) {
    showMessage(msg, err);
    $("#result", view).hidden = true;
    return;
  }
  showMessage(msg, null);
  $("#result", view).hidden = false;
  showAnswer(view, answer, file);
  refreshAnswers(ctx);
}

function showAnswer(view, a, file) {
  const decision = $("#decision", view);
  const gauge = $("#gauge", view);
  const detail = $("#result-detail", view);
  detail.replaceChildren();
  const { flagged, score: scoreValue } = verdict(a);
  let threshold = null;
  if (a.prediction !== undefined) { // classifier
    decision.textContent = a.prediction;
    $("#result-text", view).textContent = `confidence ${pct(a.confidence)}${a.severity ? ` · severity ${a.severity}` : ""} · ${a.inference_time_ms.toFixed(0)} ms`;
    detail.append(h("table", { class: "grid small" }, Object.entries(a.probabilities).map(([k, p]) =>
      h("tr", {}, h("td", {}, k), h("td", { class: "num" }, pct(p))))));
  } else {
    threshold = a.threshold;
    decision.textContent = flagged ? "NG" : "OK";
    $("#result-text", view).textContent = `score ${num(scoreValue)} against threshold ${num(threshold)} (${(100 * a.normalized_score).toFixed(0)}% of the way to it) · ${a.inference_time_ms.toFixed(0)} ms`;
    if (a.top_features) {
      detail.append(h("table", { class: "grid small" },
        h("tr", {}, h("th", {}, "feature"), h("th", { class: "num" }, "share of error"), h("th", { class: "num" }, "value"), h("th", { class: "num" }, "expected")),
        a.top_features.map((f) => h("tr", {}, h("td", {}, f.feature), h("td", { class: "num" }, pct(f.share)),
          h("td", { class: "num" }, num(f.value)), h("td", { class: "num" }, num(f.expected))))));
    }
  }
  decision.className = `badge ${flagged ? "ng" : "ok"}`;
  decision.dataset.score = scoreValue;
  decision.dataset.predictionId = a.prediction_id || "";
  gauge.hidden = threshold === null;
  if (threshold !== null) {
    const top = Math.max(scoreValue, threshold) * 1.25 || 1;
    gauge.className = `gauge ${flagged ? "ng" : ""}`;
    gauge.querySelector(".bar").style.width = `${Math.max(0, Math.min(100, (100 * scoreValue) / top))}%`;
    gauge.querySelector(".mark").style.left = `${(100 * threshold) / top}%`;
  }
  const pictures = $("#pictures", view);
  pictures.hidden = !file;
  if (file) {
    showPicture(file, $("#picture", view), $("#picture-under", view));
    const overlay = $("#overlay", view);
    overlay.hidden = !a.heatmap_png;
    overlay.closest("figure").hidden = !a.heatmap_png;
    if (a.heatmap_png) overlay.src = `data:image/png;base64,${a.heatmap_png}`;
  }
}

// --- simulator -----------------------------------------------------------------------------------
async function showSimulator(view) {
  view.append($("#t-simulator").content.cloneNode(true));
  const msg = sectionMessage(view);
  let samples, lines;
  try {
    [samples, lines] = await Promise.all([api("/v1/samples"), api("/v1/lines")]);
  } catch (err) {
    showMessage(msg, err);
    return;
  }
  const imageLines = lines.filter((l) => l.kind !== "sensor-anomaly");
  $("#sim-folder", view).replaceChildren(...samples.folders.map((f) =>
    h("option", { value: f.id }, `${f.id} (${f.good} good, ${f.defective} defective)`)));
  $("#sim-line", view).replaceChildren(...imageLines.map((l) => h("option", { value: l.line }, `${l.line} (${l.kind})`)));
  if (!samples.folders.length) {
    const where = samples.roots.length ? `under ${samples.roots.join(", ")}` : "(no web.sample_roots are configured in serve_config.yaml)";
    showMessage(msg, new ApiError(409, `no test folders in the MVTec layout were found ${where}`));
  }
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "");
  if (wanted.get("folder")) $("#sim-folder", view).value = wanted.get("folder");
  if (wanted.get("line")) $("#sim-line", view).value = wanted.get("line");
  $("#sim-form", view).addEventListener("submit", (e) => { e.preventDefault(); runSimulation(view); });
  $("#sim-stop", view).addEventListener("click", () => { if (state.sim) state.sim.stopped = true; });
}

function shuffle(items) {
  const a = items.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

async function runSimulation(view) {
  const msg = sectionMessage(view);
  const folder = $("#sim-folder", view).value;
  const line = $("#sim-line", view).value;
  const pause = Number($("#sim-pause", view).value);
  showMessage(msg, null);
  let list, detail;
  try {
    [list, detail] = await Promise.all([
      api(`/v1/samples/images?folder=${encodeURIComponent(folder)}`),
      api(`/v1/lines/${encodeURIComponent(line)}`),
    ]);
  } catch (err) {
    showMessage(msg, err);
    return;
  }
  const run = { stopped: false, results: [] };
  state.sim = run;
  const order = shuffle(list.images);
  $("#sim-run", view).disabled = true;
  $("#sim-stop", view).disabled = false;
  $("#sim-table tbody", view).replaceChildren();
  const heatmap = detail.kind === "image-anomaly" ? "?heatmap=true" : "";
  let failures = 0;
  for (const [i, item] of order.entries()) {
    if (run.stopped || state.sim !== run) break;
    $("#sim-progress", view).textContent = `${i} / ${order.length} parts · ${folder} on ${line}`;
    try {
      const blob = await api(`/v1/samples/image?folder=${encodeURIComponent(folder)}&path=${encodeURIComponent(item.path)}`, { blob: true });
      const form = new FormData();
      form.append("file", blob, item.path.split("/").pop());
      form.append("sensor_id", "simulator");
      const answer = await api(`/v1/lines/${encodeURIComponent(line)}/predict${heatmap}`, { method: "POST", body: form });
      const { flagged, score } = verdict(answer);
      const result = { ...item, flagged, score, threshold: answer.threshold, answer: answer.prediction || (flagged ? "ng" : "ok") };
      run.results.push(result);
      showPicture(blob, $("#sim-picture", view));
      $("#sim-overlay", view).src = answer.heatmap_png ? `data:image/png;base64,${answer.heatmap_png}` : "";
      $("#sim-overlay", view).closest("figure").hidden = !answer.heatmap_png;
      simulationRow(view, i + 1, result);
      simulationFigures(view, run.results, detail);
    } catch (err) {
      failures += 1;
      showMessage(msg, err);
      if (err.status === 401 || err.status === 403 || err.status === 404 || failures > 3) break;
    }
    if (pause) await new Promise((r) => setTimeout(r, pause));
  }
  const finished = run.results.length === order.length;
  $("#sim-progress", view).textContent = `${run.results.length} / ${order.length} parts · ${folder} on ${line}${finished ? " · done" : " · stopped"}`;
  $("#sim-progress", view).dataset.done = finished ? "true" : "false";
  $("#sim-run", view).disabled = false;
  $("#sim-stop", view).disabled = true;
  if (state.sim === run) state.sim = null;
}

function outcome(r) {
  if (r.label === "ng" && !r.flagged) return ["miss", "miss"];
  if (r.label === "ok" && r.flagged) return ["over-detection", "over"];
  return ["right", "right"];
}

function simulationRow(view, index, r) {
  const [text, cls] = outcome(r);
  $("#sim-current", view).replaceChildren(
    `${r.path}: true `, h("span", { class: `badge ${r.label}` }, r.label), " answer ",
    h("span", { class: `badge ${r.flagged ? "ng" : "ok"}`, id: "sim-answer" }, r.answer), ` score ${num(r.score)} · `,
    h("span", { class: `outcome-${cls}` }, text));
  $("#sim-table tbody", view).prepend(h("tr", { "data-outcome": cls },
    h("td", {}, index), h("td", {}, r.path), h("td", {}, `${r.label} (${r.defect_type})`), h("td", {}, r.answer),
    h("td", { class: "num" }, num(r.score)), h("td", { class: `outcome-${cls}` }, text)));
}

function simulationFigures(view, results, detail) {
  const good = results.filter((r) => r.label === "ok");
  const bad = results.filter((r) => r.label === "ng");
  const misses = bad.filter((r) => !r.flagged).length;
  const overs = good.filter((r) => r.flagged).length;
  $("#sim-stats", view).replaceChildren(
    statCard("parts", results.length, "sim-parts"),
    statCard(`miss rate (${misses} of ${bad.length} defective)`, pct(bad.length ? misses / bad.length : null), "sim-miss"),
    statCard(`over-detection (${overs} of ${good.length} good)`, pct(good.length ? overs / good.length : null), "sim-over"),
    statCard("right", pct(results.length ? (results.length - misses - overs) / results.length : null), "sim-right"),
  );
  const threshold = results.length ? results[results.length - 1].threshold ?? detail.threshold : detail.threshold;
  const edges = bins(results.map((r) => r.score), threshold);
  drawHistogram($("#sim-histogram", view), edges,
    { good: countInto(edges, good.map((r) => r.score)), defective: countInto(edges, bad.map((r) => r.score)) }, threshold, null);
}

// --- routing -------------------------------------------------------------------------------------
function route() {
  clearInterval(state.timer);
  if (state.sim) state.sim.stopped = true;
  showMessage(null, null);
  // a fresh container per visit: work still under way for the view left behind updates its own
  // (detached) elements instead of finding the new view's, or none
  const view = h("div", { class: "view" });
  $("#view").replaceChildren(view);
  const hash = location.hash.replace(/^#/, "") || "/";
  const path = hash.split("?")[0];
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.remove("active");
  if (path.startsWith("/line/")) {
    $("[data-nav=lines]").classList.add("active");
    showLine(view, decodeURIComponent(path.slice("/line/".length)));
  } else if (path === "/simulator") {
    $("[data-nav=simulator]").classList.add("active");
    showSimulator(view);
  } else {
    $("[data-nav=lines]").classList.add("active");
    showOverview(view);
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (e) => showMessage(null, e.reason));
document.addEventListener("DOMContentLoaded", () => {
  setupKeyDialog();
  $("#window").addEventListener("change", (e) => { state.window = e.target.value; route(); });
  route();
});
