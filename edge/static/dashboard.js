// The edge's dashboard: polls /_edge/stats, /_edge/history and /_edge/nodes, draws the
// charts on canvases. No libraries: everything it needs is in this file.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = { hits: "#2e8b57", misses: "#d2691e", all: "#4464ad", errors: "#c0392b" };
let token = sessionStorage.getItem("edge-purge-token") || "";
let lastRequests = null;

function fmtInt(n) { return n == null ? "-" : Math.round(n).toLocaleString("en"); }
function fmtRate(n) { return n == null ? "-" : (n >= 100 ? n.toFixed(0) : n.toFixed(1)); }
function fmtBytes(n) {
  if (n == null) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n >= 100 ? 0 : 1) : n.toFixed(0)) + " " + units[i];
}
function fmtPct(r) { return r == null ? "-" : (100 * r).toFixed(1) + " %"; }
function fmtSecs(s) {
  if (s == null) return "-";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1000).toFixed(1) + " ms";
  return s.toFixed(2) + " s";
}
function fmtAge(s) {
  s = Math.max(0, Math.round(s));
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function setText(id, text) { const el = $(id); if (el) el.textContent = text; }

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach(([text, cls]) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      td.title = text;
      tr.appendChild(td);
    });
    return tr;
  }));
}

// -- charts ---------------------------------------------------------------------------------

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function drawChart(canvas, samples, series, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 58, right = 8, top = 8, bottom = 20;
  const pw = w - left - right, ph = h - top - bottom;
  let max = opts.max;
  if (max == null) {
    max = 0;
    for (const s of samples) for (const k of series) max = Math.max(max, s[k] || 0);
    max = niceMax(max);
  }
  const now = Date.now() / 1000, span = opts.window;
  const x = (t) => left + pw * (1 - (now - t) / span);
  const y = (v) => top + ph * (1 - v / max);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#e2ded5"; ctx.fillStyle = "#6b6b6b"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4, yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(left + pw, yy); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(opts.format(v), left - 6, yy);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (let i = 0; i <= 4; i++) {
    const ago = (span * (4 - i)) / 4;
    ctx.fillText(ago ? "-" + fmtAge(ago) : "now", left + (pw * i) / 4, top + ph + 5);
  }
  const shown = samples.filter((s) => now - s.t <= span);
  for (const k of series) {
    ctx.strokeStyle = opts.colors[k]; ctx.lineWidth = 1.6; ctx.beginPath();
    shown.forEach((s, i) => {
      const px = x(s.t), py = y(Math.min(max, s[k] || 0));
      if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
  }
  canvas.dataset.points = String(shown.length);
}

function drawAll(samples) {
  const win = Number($("window").value);
  drawChart($("chart-requests"), samples, ["requests", "hits", "misses"],
    { window: win, format: fmtRate, colors: { requests: COLORS.all, hits: COLORS.hits, misses: COLORS.misses } });
  const ratio = samples.filter((s) => s.hits + s.misses > 0);
  drawChart($("chart-hit-ratio"), ratio, ["hit_ratio"],
    { window: win, max: 1, format: (v) => (100 * v).toFixed(0) + "%", colors: { hit_ratio: COLORS.hits } });
  drawChart($("chart-bytes"), samples, ["bytes"],
    { window: win, format: (v) => fmtBytes(v), colors: { bytes: COLORS.all } });
  drawChart($("chart-origin"), samples, ["origin_fetches", "origin_errors"],
    { window: win, format: fmtRate, colors: { origin_fetches: COLORS.all, origin_errors: COLORS.errors } });
  drawChart($("chart-collapsed"), samples, ["collapsed"],
    { window: win, format: fmtRate, colors: { collapsed: COLORS.misses } });
}

// -- polling --------------------------------------------------------------------------------

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function showStats(st) {
  setText("node-name", st.node);
  setText("workers-count", String(st.workers.length));
  setText("uptime", fmtAge(st.uptime_seconds || 0));
  setText("redis-status", st.redis.status || "off");
  setText("requests", fmtInt(st.requests));
  setText("hit-ratio", fmtPct(st.hit_ratio));
  setText("hits", fmtInt(st.hits));
  setText("misses", fmtInt(st.misses));
  setText("bytes-out", fmtBytes(st.bytes_served));
  setText("origin-fetches", fmtInt(st.origin_fetches));
  setText("origin-errors", fmtInt(Object.values(st.origin_errors).reduce((a, b) => a + b, 0)));
  setText("collapsed", fmtInt(st.collapsed));
  setText("cache-bytes", fmtBytes(st.memory.bytes));
  setText("cache-entries", fmtInt(st.memory.entries));
  setText("cache-keys", fmtInt(st.memory.keys));
  setText("hit-p99", fmtSecs(st.latency.hit && st.latency.hit.p99));
  setText("miss-p99", fmtSecs(st.latency.miss && st.latency.miss.p99));
  document.body.dataset.requests = String(st.requests);
  fillTable("top-hits", st.top_hits.map(([u, n]) => [[u], [fmtInt(n), "n"]]));
  fillTable("top-bytes", st.top_bytes.map(([u, n]) => [[u], [fmtBytes(n), "n"]]));
  fillTable("workers", st.workers.map((w) => [[String(w.pid)], [fmtInt(w.requests), "n"],
    [fmtPct(w.hit_ratio), "n"], [fmtBytes(w.bytes_served), "n"], [fmtInt(w.open_connections), "n"]]));
  fillTable("origins", st.origins.map((o) => [[o.url], [o.up ? "up" : "down", o.up ? "up" : "down"]]));
  lastRequests = st.requests;
}

function showHistory(h) {
  const rows = h.samples;
  const last = rows.slice(-5);
  const span = last.reduce((a, s) => a + s.seconds, 0);
  const avg = (k) => (span ? last.reduce((a, s) => a + s[k] * s.seconds, 0) / span : 0);
  setText("rps", fmtRate(avg("requests")));
  setText("bps", fmtBytes(avg("bytes")));
  drawAll(rows);
}

function showNodes(n) {
  const now = Date.now() / 1000;
  fillTable("nodes", n.nodes.map((r) => [[r.node], [fmtRate(r.requests_per_second), "n"],
    [fmtPct(r.hit_ratio), "n"], [fmtBytes(r.cache_bytes), "n"],
    [r.purge_generation == null ? "-" : String(r.purge_generation), "n"],
    [fmtInt(r.purge_acks_sent), "n"], [fmtAge(now - r.at) + " ago", "n"]]));
  const p = n.last_purge;
  const box = $("last-purge");
  if (!p) { box.textContent = "none yet"; return; }
  const acks = p.acks ? ` · acks ${p.acks.received}/${p.acks.expected}` : "";
  const lines = [`${p.kind}${p.soft ? " (soft)" : ""} by ${p.by}, ${fmtAge(now - p.at)} ago` +
    ` · generation ${p.generation ?? "-"} · here ${p.memory} · shared ${p.shared ?? "off"}${acks}`];
  for (const a of p.nodes || []) lines.push(`  ${a.node}[${a.pid}]: ${a.entries} entries`);
  if (p.error) lines.push("error: " + p.error);
  box.replaceChildren(...lines.map((t) => { const d = document.createElement("div"); d.textContent = t; return d; }));
}

let ticks = 0;
async function poll() {
  try {
    const [st, hist] = await Promise.all([getJSON("/_edge/stats"), getJSON("/_edge/history")]);
    showStats(st);
    showHistory(hist);
    if (ticks % 2 === 0) showNodes(await getJSON("/_edge/nodes"));
    setText("updated", new Date().toLocaleTimeString("en-GB"));
    document.body.dataset.ready = "1";
  } catch (e) {
    setText("updated", "failed: " + e.message);
  }
  ticks++;
}

// -- purge (with the token only) --------------------------------------------------------------

function list(id) {
  return $(id).value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

async function unlock(given) {
  const r = await fetch("/_edge/dashboard/purge-form", { headers: { Authorization: "Bearer " + given } });
  if (!r.ok) {
    let why = "HTTP " + r.status;
    try { why = (await r.json()).error || why; } catch (e) { /* not JSON */ }
    setText("unlock-status", why);
    return;
  }
  token = given;
  sessionStorage.setItem("edge-purge-token", token);
  $("purge-area").innerHTML = await r.text();
  $("purge-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { urls: list("purge-url"), prefixes: list("purge-prefix"), tags: list("purge-tag"),
      soft: $("purge-soft").checked };
    const out = $("purge-result");
    out.textContent = "purging…";
    const resp = await fetch("/_edge/purge", { method: "POST", body: JSON.stringify(body),
      headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" } });
    const answer = await resp.json();
    if (answer.error && !answer.kind) { out.textContent = `HTTP ${resp.status}: ${answer.error}`; return; }
    const acks = answer.acks ? `, acks ${answer.acks.received}/${answer.acks.expected}` : "";
    const nodes = (answer.nodes || []).map((n) => `${n.node}[${n.pid}]=${n.entries}`).join(" ");
    out.textContent = `${answer.kind}: ${answer.memory} here, shared ${answer.shared ?? "off"}${acks}` +
      (nodes ? `; nodes ${nodes}` : "") + (answer.error ? `; error: ${answer.error}` : "");
    out.dataset.done = String(Date.now());
    showNodes(await getJSON("/_edge/nodes"));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("unlock-form").addEventListener("submit", (ev) => { ev.preventDefault(); unlock($("token").value); });
  $("window").addEventListener("change", poll);
  if (token) unlock(token);
  poll();
  setInterval(poll, 1000);
});
