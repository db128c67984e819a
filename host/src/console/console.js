// The polyhost console: plain JavaScript and SVG, talking only to the admin API that served
// it. Every value from the server is put in the page as text (textContent), never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const HISTORY = 300; // samples kept for the charts: 5 minutes at one per second
const COLORS = ["#4fb3ff", "#5cc878", "#e8b04b", "#ef6b6b", "#b48cff", "#4fd1c5", "#f08fc0", "#c0c86b"];

const state = {
  topology: [],          // GET /api/topology plugins
  latest: new Map(),     // plugin -> last SSE sample
  history: [],           // [{time, rates, p50, p99: {plugin: value or null}}], one per sample
  token: sessionStorage.getItem("polyhost-admin-token") || "",
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, text) {
  const ns = ["svg", "g", "rect", "text", "path", "line", "polyline", "circle", "title"].includes(tag) ? SVG : null;
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function message(text, isError) {
  const m = $("#message");
  m.textContent = text || "";
  m.dataset.kind = isError ? "error" : "info";
}

const short = (d) => (d ? d.slice(0, 12) : "–");
const fmt = (n, digits = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(digits));

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const r = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (r.status === 401) {
    $("#token-form").classList.remove("hidden");
  }
  if (!r.ok) {
    const why = (body && body.error) || r.statusText;
    const e = new Error(why);
    e.body = body;
    e.status = r.status;
    throw e;
  }
  return body;
}

// ---- the graph -------------------------------------------------------------------------

function topicLabel(t) {
  if (t.startsWith("^")) return t.slice(1).replace(/\\\./g, ".").replace(/\.\*$/, "*");
  return t;
}

function layout(plugins) {
  const generators = plugins.filter((p) => p.kind === "generator");
  const handlers = plugins.filter((p) => p.kind !== "generator");
  const topics = [];
  const addTopic = (t) => { const l = topicLabel(t); if (!topics.includes(l)) topics.push(l); };
  generators.forEach((g) => g.publish.forEach(addTopic));
  handlers.forEach((h) => h.subscribe.forEach(addTopic));
  handlers.forEach((h) => h.publish.forEach(addTopic));
  const stores = [];
  handlers.forEach((h) => h.stores.forEach((s) => { if (!stores.includes(s)) stores.push(s); }));
  return { generators, handlers, topics, stores };
}

function drawGraph() {
  const svg = $("#graph");
  svg.replaceChildren();
  const { generators, handlers, topics, stores } = layout(state.topology);
  const rowH = 34;
  const rows = Math.max(generators.length, topics.length, handlers.length * 2, stores.length, 1);
  const height = rows * rowH + 40;
  const width = svg.clientWidth || 1100;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.height = height + "px";
  const col = [0.02, 0.24, 0.52, 0.82].map((f) => f * width);
  const boxW = [150, 190, 200, 150];
  const pos = new Map();
  const place = (names, c, h) => {
    const step = (height - 20) / Math.max(names.length, 1);
    names.forEach((n, i) => pos.set(c + ":" + n, { x: col[c], y: 10 + step * i + (step - h) / 2, w: boxW[c], h }));
  };
  place(generators.map((g) => g.name), 0, 56);
  place(topics, 1, 24);
  place(handlers.map((h) => h.name), 2, 56);
  place(stores, 3, 28);

  const edges = el("g");
  const nodes = el("g");
  svg.append(edges, nodes);
  const edge = (from, to, cls, label, id) => {
    if (!from || !to) return;
    const x1 = from.x + from.w, y1 = from.y + from.h / 2, x2 = to.x, y2 = to.y + to.h / 2;
    const mx = (x1 + x2) / 2;
    edges.append(el("path", { class: "edge " + cls, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "data-edge": id }));
    if (label !== undefined) {
      edges.append(el("text", { class: "edge-label", x: mx - 20, y: (y1 + y2) / 2 - 3, "data-edge-label": id }, label));
    }
  };
  for (const g of generators) {
    g.publish.forEach((t, i) => edge(pos.get("0:" + g.name), pos.get("1:" + topicLabel(t)), "gen", i === 0 ? "" : undefined, g.name));
  }
  for (const h of handlers) {
    h.subscribe.forEach((t) => edge(pos.get("1:" + topicLabel(t)), pos.get("2:" + h.name), "in", undefined, h.name));
    h.stores.forEach((s) => edge(pos.get("2:" + h.name), pos.get("3:" + s), "out", "", h.name));
  }
  // Derived events go back to Kafka: drawn dashed from the plugin to the topic's left side.
  for (const h of handlers) {
    for (const t of h.publish) {
      const from = pos.get("2:" + h.name), to = pos.get("1:" + topicLabel(t));
      if (!from || !to) continue;
      edges.append(el("path", {
        class: "edge derived", d: `M${from.x},${from.y + from.h - 6} C${from.x - 60},${from.y + from.h + 20} ${to.x + to.w + 60},${to.y + to.h} ${to.x + to.w},${to.y + to.h / 2}`,
      }));
    }
  }
  const box = (key, cls, lines, name) => {
    const p = pos.get(key);
    if (!p) return;
    const g = el("g", { class: "node " + cls, "data-node": name || "" , transform: `translate(${p.x},${p.y})` });
    g.append(el("rect", { width: p.w, height: p.h, rx: 5 }));
    lines.forEach(([text, c, attr], i) => g.append(el("text", { x: 8, y: 15 + i * 13, class: c || "", ...(attr || {}) }, text)));
    nodes.append(g);
  };
  for (const g of generators) {
    box("0:" + g.name, "plugin", [[g.name], ["", "dim", { "data-stat": g.name }], ["", "dim", { "data-version": g.name }]], g.name);
  }
  for (const t of topics) box("1:" + t, "topic", [[t]]);
  for (const h of handlers) {
    box("2:" + h.name, "plugin", [[h.name], ["", "dim", { "data-stat": h.name }], ["", "dim", { "data-version": h.name }]], h.name);
  }
  for (const s of stores) box("3:" + s, "store", [[s]]);
  updateGraph();
}

function updateGraph() {
  for (const [name, p] of state.latest) {
    const stat = document.querySelector(`[data-stat="${CSS.escape(name)}"]`);
    if (stat) {
      stat.textContent = p.kind === "generator"
        ? `${fmt(p.rate)}/s · ${p.generated} sent · ${p.state}`
        : `${fmt(p.rate)}/s · lag ${p.lag ?? "–"} · retry ${p.retried} · dlq ${p.dead_lettered}`;
      stat.setAttribute("class", p.dead_lettered > 0 && p.kind !== "generator" ? "bad" : "dim");
    }
    const v = document.querySelector(`[data-version="${CSS.escape(name)}"]`);
    if (v) v.textContent = `${short(p.digest)}${p.swaps ? " · " + p.swaps + " swap(s)" : ""}`;
    document.querySelectorAll(`[data-edge="${CSS.escape(name)}"]`).forEach((e) => e.classList.toggle("live", p.rate > 0));
    document.querySelectorAll(`[data-edge-label="${CSS.escape(name)}"]`).forEach((e) => {
      e.textContent = p.kind === "generator" ? `${fmt(p.rate)}/s` : `${fmt(p.rate)}/s, lag ${p.lag ?? "–"}`;
    });
  }
}

// ---- the plugin table ------------------------------------------------------------------

function drawPlugins() {
  const body = $("#plugins tbody");
  body.replaceChildren();
  for (const spec of state.topology) {
    const tr = el("tr", { "data-plugin": spec.name });
    const cells = ["name", "state", "digest", "previous_digest", "swaps", "rate", "done", "lag", "retried", "dead_lettered", "latency_ms"];
    for (const c of cells) tr.append(el("td", { "data-cell": c, class: ["name", "state", "digest", "previous_digest"].includes(c) ? "" : "num" }));
    const actions = el("td");
    const reload = el("button", { type: "button", "data-action": "reload" }, "Reload");
    const rollback = el("button", { type: "button", "data-action": "rollback" }, "Rollback");
    reload.addEventListener("click", () => swap(spec.name, "reload"));
    rollback.addEventListener("click", () => swap(spec.name, "rollback"));
    actions.append(reload, " ", rollback);
    tr.append(actions);
    const details = el("tr", { class: "details" });
    const grants = spec.grants.map(([b, g]) => `${b}: ${g}`).join("; ") || "none";
    const limits = Object.entries(spec.limits).map(([k, v]) => `${k}=${v}`).join(", ");
    details.append(el("td", { colspan: 12 }, `grants: ${grants} · limits: ${limits} · topics: ${spec.subscribe.join(", ") || "–"}`));
    body.append(tr, details);
  }
  updatePlugins();
}

function updatePlugins() {
  for (const [name, p] of state.latest) {
    const tr = document.querySelector(`#plugins tr[data-plugin="${CSS.escape(name)}"]`);
    if (!tr) continue;
    const set = (c, v) => { const td = tr.querySelector(`[data-cell="${c}"]`); if (td) td.textContent = v; };
    set("name", name);
    set("state", p.state);
    set("digest", short(p.digest));
    set("previous_digest", short(p.previous_digest));
    set("swaps", p.swaps);
    set("rate", fmt(p.rate));
    set("done", p.kind === "generator" ? p.generated : p.processed);
    set("lag", p.lag ?? "–");
    set("retried", p.retried);
    set("dead_lettered", p.dead_lettered);
    set("latency_ms", p.latency_ms === null || p.latency_ms === undefined ? "–" : fmt(p.latency_ms, 0) + " ms");
  }
}

async function swap(name, what) {
  try {
    const r = await api(`/api/plugins/${encodeURIComponent(name)}/${what}`, { method: "POST", body: "{}" });
    message(`${name}: ${r.result} (${short(r.previous)} → ${short(r.digest)})`);
  } catch (e) {
    message(`${name}: ${what} refused: ${e.message}`, true);
  }
}

// ---- the charts ------------------------------------------------------------------------

// A plugin's color: its place in the topology, the same in every chart.
const colorOf = (name) => COLORS[Math.max(0, state.topology.findIndex((p) => p.name === name)) % COLORS.length];

// Lines over the last HISTORY samples, the newest at the right. `series`: [{name, color,
// values (one per sample in state.history, null where there is none), dash, attrs}]; a null
// breaks a line, and a value with none beside it is drawn as a dot. `label` formats the
// scale. The legend gets one entry per name (in its first series' color), then `keys`.
function drawLines(svg, legend, series, label, keys = []) {
  svg.replaceChildren();
  const width = svg.clientWidth || 700, height = 180, left = 52, bottom = 18, top = 10;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v !== undefined) max = Math.max(max, v);
  max = max > 0 ? max * 1.1 : 1;
  const x = (i) => left + ((width - left - 4) * (HISTORY - state.history.length + i)) / (HISTORY - 1);
  const y = (v) => height - bottom - ((height - bottom - top) * v) / max;
  svg.append(el("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  svg.append(el("line", { class: "axis grid", x1: left, y1: y(max / 2), x2: width, y2: y(max / 2) }));
  svg.append(el("text", { class: "edge-label", x: 2, y: top + 4 }, label(max)));
  svg.append(el("text", { class: "edge-label", x: 2, y: y(max / 2) + 4 }, label(max / 2)));
  svg.append(el("text", { class: "edge-label", x: 2, y: height - bottom + 4 }, label(0)));
  svg.append(el("text", { class: "edge-label", x: left, y: height - 3 }, `${HISTORY / 60} min ago`));
  svg.append(el("text", { class: "edge-label", x: width - 4, y: height - 3, "text-anchor": "end" }, "now"));
  const named = new Map();
  for (const s of series) {
    if (!named.has(s.name)) named.set(s.name, s.color);
    const common = { stroke: s.color, "data-series": s.name, ...(s.attrs || {}) };
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        svg.append(el("polyline", { ...common, points: run.join(" "), fill: "none", "stroke-width": 1.5, "stroke-dasharray": s.dash }));
      } else if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        svg.append(el("circle", { ...common, cx, cy, r: 2, fill: s.color }));
      }
      run = [];
    };
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) flush();
      else run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    });
    flush();
  }
  legend.replaceChildren();
  for (const [name, color] of named) {
    const item = el("span", {}, "■ " + name);
    item.style.color = color;
    legend.append(item);
  }
  for (const k of keys) legend.append(el("span", { class: "key" }, k));
}

const perSecond = (v) => (v === 0 ? "0" : fmt(v, v < 10 ? 1 : 0) + "/s");
const millis = (v) => (v === 0 ? "0" : v >= 1000 ? fmt(v / 1000, 1) + " s" : fmt(v, v < 10 ? 1 : 0) + " ms");

function drawCharts() {
  const at = (key, name) => state.history.map((s) => s[key][name] ?? null);
  const names = state.topology.map((p) => p.name);
  drawLines($("#chart"), $("#legend"),
    names.map((n) => ({ name: n, color: colorOf(n), values: at("rates", n).map((v) => v ?? 0) })),
    perSecond);
  // Generators have no latency: they produce, nothing becomes final in them.
  const handlers = state.topology.filter((p) => p.kind !== "generator").map((p) => p.name);
  drawLines($("#latency-chart"), $("#latency-legend"),
    handlers.flatMap((n) => [
      { name: n, color: colorOf(n), values: at("p99", n), attrs: { "data-quantile": "p99" } },
      { name: n, color: colorOf(n), values: at("p50", n), dash: "4 3", attrs: { "data-quantile": "p50" } },
    ]),
    millis, ["── p99", "╌╌ p50"]);
}

// ---- live samples ----------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    $("#live").textContent = "live";
    $("#live").className = "badge on";
  });
  source.addEventListener("error", () => {
    $("#live").textContent = "reconnecting…";
    $("#live").className = "badge off";
  });
  source.addEventListener("sample", async (ev) => {
    const s = JSON.parse(ev.data);
    $("#clock").textContent = s.time;
    const names = new Set(s.plugins.map((p) => p.name));
    const known = new Set(state.topology.map((p) => p.name));
    const changed = names.size !== known.size || [...names].some((n) => !known.has(n));
    state.latest = new Map(s.plugins.map((p) => [p.name, p]));
    const per = (f) => Object.fromEntries(s.plugins.map((p) => [p.name, f(p)]));
    state.history.push({
      time: s.time,
      rates: per((p) => p.rate),
      p50: per((p) => p.latency_p50_ms ?? null),
      p99: per((p) => p.latency_p99_ms ?? null),
    });
    if (state.history.length > HISTORY) state.history.shift();
    if (changed) await loadTopology();
    updateGraph();
    updatePlugins();
    drawCharts();
  });
}

async function loadTopology() {
  const t = await api("/api/topology");
  state.topology = t.plugins;
  drawGraph();
  drawPlugins();
  const select = $("#dlq-plugin");
  const chosen = select.value;
  select.replaceChildren(...state.topology.filter((p) => p.kind !== "generator").map((p) => el("option", { value: p.name }, p.name)));
  if (chosen && state.topology.some((p) => p.name === chosen)) select.value = chosen;
}

// ---- dead letters ----------------------------------------------------------------------

function eventId(d) {
  try { return JSON.parse(d.value).id || "–"; } catch (_) { return "–"; }
}

async function loadDeadLetters() {
  const plugin = $("#dlq-plugin").value;
  if (!plugin) return;
  const body = $("#dlq tbody");
  try {
    const letters = await api(`/api/dlq/${encodeURIComponent(plugin)}`);
    body.replaceChildren();
    for (const d of letters) {
      const tr = el("tr", { "data-offset": d.at.offset, "data-event": eventId(d) });
      const original = d.original ? `${d.original.topic}/${d.original.partition}/${d.original.offset}` : "–";
      tr.append(
        el("td", { class: "num" }, d.at.partition ? `${d.at.partition}/${d.at.offset}` : d.at.offset),
        el("td", {}, d.time || "–"),
        el("td", {}, eventId(d)),
        el("td", {}, original),
        el("td", { class: "reason" }, d.reason),
        el("td", { "data-cell": "replayed" }, d.replayed ? `yes, ${d.replayed.at}` : "no"),
      );
      const actions = el("td");
      const inspect = el("button", { type: "button", "data-action": "inspect" }, "Inspect");
      const replay = el("button", { type: "button", "data-action": "replay" }, "Replay");
      inspect.addEventListener("click", () => {
        const pre = $("#dlq-detail");
        pre.textContent = JSON.stringify(d, null, 2);
        pre.classList.remove("hidden");
      });
      replay.addEventListener("click", () => replayLetters(plugin, { offsets: [[d.at.partition, d.at.offset]] }));
      actions.append(inspect, " ", replay);
      tr.append(actions);
      body.append(tr);
    }
    if (letters.length === 0) {
      const tr = el("tr");
      tr.append(el("td", { colspan: 7 }, `no dead letters for ${plugin}`));
      body.append(tr);
    }
  } catch (e) {
    message(`dead letters of ${plugin}: ${e.message}`, true);
  }
}

async function replayLetters(plugin, request) {
  try {
    const r = await api(`/api/dlq/${encodeURIComponent(plugin)}/replay`, { method: "POST", body: JSON.stringify(request) });
    const done = r.outcomes.map((o) => `${o.dead_letter.offset}: ${o.result}`).join(", ");
    message(`replay of ${plugin}: ${done || "nothing to replay"}`);
  } catch (e) {
    const outcomes = e.body && e.body.outcomes ? " (" + e.body.outcomes.map((o) => `${o.dead_letter.offset}: ${o.result}`).join(", ") + ")" : "";
    message(`replay of ${plugin} refused: ${e.message}${outcomes}`, true);
  }
  await loadDeadLetters();
}

// ---- audit search ----------------------------------------------------------------------

async function searchAudit() {
  const form = new FormData($("#audit-form"));
  const params = new URLSearchParams();
  for (const [k, v] of form) if (v) params.set(k, v);
  try {
    const r = await api("/api/audit?" + params.toString());
    $("#audit-total").textContent = `${r.total} event(s)` + (r.interval ? `, timeline by ${r.interval}` : "");
    const types = $("#audit-types tbody");
    types.replaceChildren(...r.by_type.map((t) => {
      const tr = el("tr");
      tr.append(el("td", {}, t.type), el("td", { class: "num" }, t.count));
      return tr;
    }));
    const hits = $("#audit-hits tbody");
    hits.replaceChildren(...r.hits.map((h) => {
      const tr = el("tr");
      for (const k of ["time", "type", "id", "user_id", "title_id", "topic"]) tr.append(el("td", {}, h[k] ?? "–"));
      return tr;
    }));
    const svg = $("#audit-timeline");
    svg.replaceChildren();
    const width = svg.clientWidth || 700, height = 140;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const max = Math.max(1, ...r.timeline.map((b) => b.count));
    const w = width / Math.max(r.timeline.length, 1);
    r.timeline.forEach((b, i) => {
      const h = ((height - 20) * b.count) / max;
      const bar = el("rect", { class: "bar", x: i * w + 1, y: height - 16 - h, width: Math.max(w - 2, 1), height: h });
      bar.append(el("title", {}, `${b.time}: ${b.count}`));
      svg.append(bar);
    });
    if (r.timeline.length) {
      svg.append(el("text", { class: "edge-label", x: 0, y: height - 3 }, r.timeline[0].time));
      svg.append(el("text", { class: "edge-label", x: width - 150, y: height - 3 }, r.timeline[r.timeline.length - 1].time));
    }
  } catch (e) {
    message(`audit search: ${e.message}`, true);
  }
}

// ---- start -----------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", async () => {
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token").value;
    sessionStorage.setItem("polyhost-admin-token", state.token);
    $("#token-form").classList.add("hidden");
    message("token saved for this tab");
  });
  $("#reload-manifest").addEventListener("click", async () => {
    try {
      const r = await api("/api/manifest/reload", { method: "POST", body: "{}" });
      message(`manifest reloaded: ${r.changes.join(", ") || "no change"}`);
      await loadTopology();
    } catch (e) {
      message(`manifest reload refused: ${e.message}`, true);
    }
  });
  $("#dlq-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadDeadLetters(); });
  $("#dlq-plugin").addEventListener("change", loadDeadLetters);
  $("#dlq-replay-all").addEventListener("click", () => replayLetters($("#dlq-plugin").value, { all: true }));
  $("#audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchAudit(); });
  try {
    await loadTopology();
  } catch (e) {
    message(`cannot read the topology: ${e.message}`, true);
  }
  connect();
  loadDeadLetters();
  searchAudit();
  window.addEventListener("resize", () => { drawGraph(); drawCharts(); });
});
