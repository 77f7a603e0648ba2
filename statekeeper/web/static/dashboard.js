// statekeeper dashboard: reads the /v1 API with the API key kept in localStorage, and the
// live stream /v1/dashboard/stream with fetch() (EventSource cannot send headers).
// Everything shown is built with DOM nodes and textContent: no data ever becomes HTML.
"use strict";

const KEY_STORE = "statekeeper.apiKey";
const MAX_TRANSITIONS = 40;
const CONDITIONS = ["active", "completed", "failed", "cancelled"];
const $ = (id) => document.getElementById(id);

let apiKey = localStorage.getItem(KEY_STORE);
let stream = null; // AbortController of the open stream
let tickMs = 5000;
let refreshing = false;
let refreshAgain = false;
let refreshTimer = null;
const seen = new Set(); // "key/version" of transitions listed

// --- small DOM helpers ---------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name === "style") Object.assign(node.style, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(id, ...children) {
  $(id).replaceChildren(...children.flat());
}

const number = (n) => (n ?? 0).toLocaleString("en-US");
const clock = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

// --- the API -------------------------------------------------------------------------

function authHeaders() {
  return { Authorization: `Bearer ${apiKey}` };
}

async function get(path) {
  try {
    const reply = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    const body = await reply.json().catch(() => null);
    if (reply.status === 401) unauthorized();
    return { ok: reply.ok, status: reply.status, body };
  } catch (error) {
    return { ok: false, status: 0, body: null };
  }
}

function unauthorized() {
  if (!apiKey) return;
  forgetKey("That API key was refused.");
}

function forgetKey(message) {
  apiKey = null;
  localStorage.removeItem(KEY_STORE);
  if (stream) stream.abort();
  stream = null;
  showLogin(message || "");
}

// --- snapshot panels -----------------------------------------------------------------

function scheduleRefresh(delayMs) {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, delayMs);
}

async function refresh() {
  if (!apiKey) return;
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  try {
    const [counts, failed, stuck, lifecycle, cache] = await Promise.all([
      get("/v1/workflows/counts"),
      get("/v1/workflows?condition=failed&limit=50"),
      get("/v1/workflows/stuck"),
      get("/v1/lifecycle/stats"),
      get("/v1/dashboard/cache"),
    ]);
    if (!apiKey) return;
    if (counts.ok) renderWorkflows(counts.body); else notice("workflows", counts);
    if (failed.ok) renderFailed(failed.body.items); else notice("failed", failed);
    if (stuck.ok) renderStuck(stuck.body.items); else notice("stuck", stuck);
    if (lifecycle.ok) renderLifecycle(lifecycle.body); else notice("lifecycle", lifecycle);
    if (cache.ok) renderCache(cache.body); else notice("cache", cache);
    $("updated").textContent = `updated ${clock(Date.now())}`;
  } finally {
    refreshing = false;
    if (refreshAgain) { refreshAgain = false; scheduleRefresh(0); }
  }
}

function notice(id, reply) {
  const text = reply.status === 503 ? "The worker is recovering; retrying…"
    : reply.status === 404 ? "Not available on this worker."
    : `Could not load (${reply.status || "no answer"}).`;
  const panel = $(id);
  const old = panel.querySelector(".notice");
  if (old) old.textContent = text;
  else panel.prepend(h("p", { class: "notice" }, text));
}

function renderWorkflows(counts) {
  const names = Object.keys(counts).sort();
  const totals = { active: 0, completed: 0, failed: 0, cancelled: 0 };
  for (const name of names) {
    for (const c of CONDITIONS) totals[c] += counts[name].conditions[c] || 0;
  }
  $("kpi-active").textContent = number(totals.active);
  $("kpi-completed").textContent = number(totals.completed);
  $("kpi-failed").textContent = number(totals.failed);
  if (!names.length) {
    fill("workflows", h("p", { class: "empty" }, "No workflows defined for this tenant yet."));
    return;
  }
  fill("workflows", names.map((name) => workflowCard(name, counts[name])));
}

function workflowCard(name, { states, conditions }) {
  const total = CONDITIONS.reduce((sum, c) => sum + (conditions[c] || 0), 0);
  const widest = Math.max(1, ...Object.values(states));
  return h("div", { class: "workflow", "data-workflow": name },
    h("div", { class: "wf-head" },
      h("span", { class: "wf-name" }, name),
      h("span", { class: "wf-total" }, `${number(total)} items`)),
    h("div", { class: "stack", title: "items by condition" },
      CONDITIONS.filter((c) => conditions[c]).map((c) => h("span", {
        class: `bg-${c}`, style: { width: `${(100 * conditions[c]) / Math.max(total, 1)}%` },
      }))),
    h("div", { class: "legend" },
      CONDITIONS.map((c) => h("span", { class: "cond", "data-condition": c },
        h("i", { class: `dot bg-${c}` }), c, " ", h("span", { class: "n" }, number(conditions[c] || 0))))),
    Object.entries(states).map(([state, n]) => h("div", { class: "state-row", "data-state": state },
      h("span", { class: "state-name", title: state }, state),
      h("div", { class: "track" }, h("div", { class: "fill", style: { width: `${(100 * n) / widest}%` } })),
      h("span", { class: "count" }, number(n)))));
}

function resumeBody(item) {
  return {
    type: "workflow.resume",
    key: item.key,
    data: { reason: "resumed from the dashboard", expected_version: item.version },
  };
}

function prettyBody(body) { // short enough to read at a glance, still valid JSON
  const field = (name) => `  ${JSON.stringify(name)}: ${JSON.stringify(body[name])}`;
  const pairs = Object.entries(body.data).map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  const data = `{${pairs.join(", ")}}`;
  return `{\n${field("type")},\n${field("key")},\n  "data": ${data}\n}`;
}

function curlFor(body) {
  const json = JSON.stringify(body).replaceAll("'", "'\\''");
  return `curl -X POST ${location.origin}/v1/events -H "Authorization: Bearer $STATEKEEPER_API_KEY" `
    + `-H "Content-Type: application/json" -d '${json}'`;
}

function copyButton(label, text) {
  const button = h("button", { class: "small", type: "button" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Select and copy";
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

function renderFailed(items) {
  if (!items.length) {
    fill("failed", h("p", { class: "empty" }, "No failed items."));
    return;
  }
  fill("failed", items.map((item) => {
    const body = resumeBody(item);
    const error = item.error || {};
    return h("div", { class: "failed-item", "data-key": item.key },
      h("div", { class: "fi-head" },
        h("span", { class: "item" }, item.key),
        h("span", { class: "fi-meta" },
          `${item.workflow} · at ${item.state} · attempt ${item.attempt} · v${item.version}`
          + ` · failed ${clock(error.at || item.updated_at)}`)),
      h("div", { class: "error-text" }, error.message || "(no error message)"),
      h("div", { class: "resume" },
        h("pre", { class: "resume-body" }, prettyBody(body)),
        h("div", { class: "buttons" },
          copyButton("Copy JSON", JSON.stringify(body)),
          copyButton("Copy curl", curlFor(body)))),
      h("p", { class: "resume-how" }, "Send this body to ", h("code", {}, "POST /v1/events"),
        " with your API key; ", h("code", {}, "expected_version"),
        " refuses it (dead-lettered as version_conflict) if the item changed meanwhile."));
  }));
}

function renderStuck(items) {
  $("kpi-stuck").textContent = number(items.length);
  if (!items.length) {
    fill("stuck", h("p", { class: "empty" }, "Nothing is past its SLA."));
    return;
  }
  fill("stuck", h("table", { class: "table" },
    h("thead", {}, h("tr", {}, h("th", {}, "item"), h("th", {}, "state"), h("th", { class: "num" }, "over SLA by"))),
    h("tbody", {}, items.slice(0, 20).map((item) => h("tr", { "data-key": item.key },
      h("td", {}, h("span", { class: "item" }, item.key), " ", h("span", { class: "wf" }, item.workflow)),
      h("td", {}, h("span", { class: "mono" }, item.state), " ", h("span", { class: `chip ${item.condition}` }, item.condition)),
      h("td", { class: "num" }, h("span", { class: "overdue" }, duration(item.overdue_ms))))))));
}

function renderCache(cache) {
  $("kpi-cache").textContent = percent(cache.hit_rate);
  const parts = [["hit", cache.hits], ["stale", cache.stale], ["miss", cache.misses], ["bypass", cache.bypasses]];
  const total = Math.max(1, cache.requests);
  fill("cache",
    h("div", { class: "cache-row" },
      h("span", { class: "big" }, percent(cache.hit_rate)),
      h("span", { class: "hint" }, cache.requests
        ? `fresh hits of ${number(cache.requests)} cached requests`
        : "no cached requests since the workers started")),
    h("div", { class: "split" }, parts.filter(([, n]) => n).map(([name, n]) =>
      h("span", { class: `bg-${name}`, title: name, style: { width: `${(100 * n) / total}%` } }))),
    h("div", { class: "kv" },
      parts.map(([name, n]) => h("span", {}, h("i", { class: `dot bg-${name}` }), ` ${name} `, h("b", {}, number(n)))),
      h("span", {}, "Redis ", h("b", {}, cache.available ? "up" : "bypassed")),
      h("span", {}, "workers ", h("b", {}, number(cache.workers)))));
}

function renderLifecycle(stats) {
  const kinds = Object.entries(stats.resources || {});
  $("kpi-resources").textContent = number(stats.total ? stats.total.live : 0);
  const total = stats.total || { live: 0, bytes: 0, expired: {}, released: 0 };
  const rows = kinds.map(([kind, s]) => h("tr", { "data-kind": kind },
    h("td", { class: "mono" }, kind), h("td", { class: "num" }, number(s.live)),
    h("td", { class: "num" }, bytes(s.bytes)),
    h("td", { class: "num" }, number((s.expired.ttl || 0) + (s.expired.idle || 0))),
    h("td", { class: "num" }, number(s.released))));
  const upcoming = (stats.next_deadlines || []).slice(0, 5);
  fill("lifecycle",
    h("div", { class: "kv" },
      h("span", {}, "live ", h("b", {}, number(total.live))),
      h("span", {}, "size ", h("b", {}, bytes(total.bytes))),
      h("span", {}, "expired (ttl / idle) ", h("b", {}, `${number(total.expired.ttl)} / ${number(total.expired.idle)}`)),
      h("span", {}, "released ", h("b", {}, number(total.released))),
      h("span", {}, "workflow items purged ", h("b", {}, number((stats.purged || {}).workflow)))),
    kinds.length ? h("table", { class: "table", style: { marginTop: "10px" } },
      h("thead", {}, h("tr", {}, ["kind", "live", "bytes", "expired", "released"].map((t, i) =>
        h("th", { class: i ? "num" : null }, t)))),
      h("tbody", {}, rows)) : h("p", { class: "empty" }, "No resources registered."),
    upcoming.length ? [h("div", { class: "sub-h" }, "next deadlines"),
      h("div", { class: "kv" }, upcoming.map((d) => h("span", {},
        h("span", { class: "mono" }, d.key), ` ${d.action} `, h("b", {}, `in ${duration(d.at - Date.now())}`))))] : []);
}

// --- live transitions ----------------------------------------------------------------

function addTransition(record, fresh) {
  const id = `${record.key}/${record.version}`;
  if (seen.has(id)) return;
  seen.add(id);
  const type = (record.type || "").replace("workflow.", "");
  const change = record.from === null || record.from === undefined
    ? [h("span", { class: "mono" }, record.to), h("span", { class: "wf" }, " started")]
    : record.from === record.to
      ? [h("span", { class: "mono" }, record.to), h("span", { class: "wf" }, ` ${type}`)]
      : [h("span", { class: "mono" }, record.from), h("span", { class: "arrow" }, "→"), h("span", { class: "mono" }, record.to)];
  const row = h("tr", {
    class: fresh ? "fresh" : null, "data-key": record.key, "data-to": record.to,
    "data-condition": record.condition, "data-version": record.version,
  },
    h("td", { class: "time" }, clock(record.ts)),
    h("td", {}, h("span", { class: "item" }, record.key), " ", h("span", { class: "wf" }, record.workflow)),
    h("td", {}, change),
    h("td", {}, h("span", { class: `chip ${record.condition}` }, record.condition)),
    h("td", { class: "num" }, record.version));
  const body = $("transitions").tBodies[0];
  body.prepend(row);
  while (body.rows.length > MAX_TRANSITIONS) body.lastElementChild.remove();
  $("transitions-empty").hidden = true;
}

// --- the stream ----------------------------------------------------------------------

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live-text").textContent = text || state;
}

function parseEvent(chunk) {
  let event = "message";
  const data = [];
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return { event, data: data.length ? JSON.parse(data.join("\n")) : null };
}

function onEvent({ event, data }) {
  if (event === "hello") {
    tickMs = data.tick_s * 1000;
    $("tenant").textContent = `tenant ${data.tenant}`;
    $("tenant").hidden = false;
    setLive("live");
    refresh(); // changes made while not connected
  } else if (event === "status") {
    addTransition(data, true);
    scheduleRefresh(250);
  } else if (event === "tick" || event === "gap") {
    refresh();
  }
}

async function readStream(controller) {
  const reply = await fetch("/v1/dashboard/stream", {
    headers: authHeaders(), signal: controller.signal, cache: "no-store",
  });
  if (reply.status === 401) { unauthorized(); return; }
  if (!reply.ok || !reply.body) throw new Error(`stream answered ${reply.status}`);
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let watchdog = null;
  const arm = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => controller.abort(), tickMs * 3 + 2000); // silent: reconnect
  };
  arm();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      arm();
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (chunk.trim()) onEvent(parseEvent(chunk));
      }
    }
  } finally {
    clearTimeout(watchdog);
  }
}

async function connect() {
  let backoff = 1000;
  while (apiKey) {
    const controller = new AbortController();
    stream = controller;
    setLive("connecting");
    try {
      await readStream(controller);
      backoff = 1000;
    } catch (error) {
      // dropped connection, worker restart or silence: retry below
    }
    if (stream !== controller || !apiKey) return; // signed out meanwhile
    setLive("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

// --- screens -------------------------------------------------------------------------

function showLogin(message) {
  $("board").hidden = true;
  $("signout").hidden = true;
  $("tenant").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  setLive("off", "offline");
  $("key").value = "";
  $("key").focus();
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  $("transitions").tBodies[0].replaceChildren();
  $("transitions-empty").hidden = false;
  seen.clear();
  refresh();
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key").value.trim();
    if (!value) return;
    apiKey = value;
    localStorage.setItem(KEY_STORE, value);
    showBoard();
  });
  $("signout").addEventListener("click", () => forgetKey(""));
  if (apiKey) showBoard(); else showLogin("");
});
