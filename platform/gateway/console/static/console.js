// pagefleet console: a few views over the gateway's own API. No dependencies, no network
// beyond this gateway. The key lives in sessionStorage and travels only as a bearer header.
"use strict";

const KEY = "pagefleet.key";
const HISTORY_S = 15 * 60;  // chart window
const $ = (id) => document.getElementById(id);
const state = { session: null, view: null, timers: [], history: {}, lastAdded: {}, abort: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// ---- session and navigation -----------------------------------------------------------

async function start() {
  try {
    state.session = await api("/console/api/session");
  } catch (error) {
    if (error.status === 401) return askForKey(sessionStorage.getItem(KEY) ? "That key was refused." : null);
    $("key-message").textContent = `Cannot reach the gateway: ${error.message}`;
    $("key-view").hidden = false;
    return;
  }
  $("key-view").hidden = true;
  $("forget-key").hidden = !state.session.auth_required;
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = false;
  const wanted = location.hash.slice(1);
  show(["fleet", "playground", "jobs"].includes(wanted) ? wanted : (state.session.admin ? "fleet" : "playground"));
}

function askForKey(message) {
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = true;
  $("key-message").textContent = message || "This gateway needs an API key.";
  $("key-view").hidden = false;
  $("key-input").focus();
}

function show(view) {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  state.view = view;
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.view === view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `${view}-view`;
  history.replaceState(null, "", `#${view}`);
  if (view === "fleet") startFleet();
  if (view === "playground") startPlayground();
  if (view === "jobs") poll(refreshJobs, 5000);
}

function poll(fn, everyMs) {
  fn();
  state.timers.push(setInterval(fn, everyMs));
}

// ---- fleet --------------------------------------------------------------------------------

function startFleet() {
  const denied = !state.session.admin;
  $("fleet-denied").hidden = !denied;
  $("fleet-body").hidden = denied;
  if (!denied) poll(refreshFleet, 2000);
}

async function refreshFleet() {
  let fleet, events;
  try {
    [fleet, events] = await Promise.all([api("/console/api/fleet"), api("/console/api/events?limit=50")]);
  } catch (error) {
    if (error.status === 403) { $("fleet-denied").hidden = false; $("fleet-body").hidden = true; }
    $("fleet-updated").textContent = `failed (${error.message})`;
    return;
  }
  $("fleet-updated").textContent = new Date(fleet.at * 1000).toLocaleTimeString();
  $("models").replaceChildren(...fleet.models.map(modelCard));
  $("queues").replaceChildren(queueTable(fleet));
  $("events").replaceChildren(...(events.data.length ? events.data.map(eventItem)
    : [el("li", { class: "muted" }, "No scaling decisions yet.")]));
}

function modelCard(m) {
  const profile = m.gpus ? `${m.gpus}× ${m.accelerator}${m.tensor_parallel_size > 1 ? `, TP ${m.tensor_parallel_size}` : ""}` : "CPU";
  const desired = m.desired_replicas === null ? "?" : m.desired_replicas;
  const card = el("div", { class: "card", id: `model-${m.name}`, "data-model": m.name },
    el("h3", {}, m.name),
    el("p", { class: "muted" }, `${m.source} · ${profile} · replicas ${m.min_replicas}–${m.max_replicas}`),
    el("p", { class: "replicas" }, `desired ${desired} · starting ${m.starting} · ready `,
      el("strong", { class: "ready-count" }, m.ready), ` · draining ${m.draining}`));
  if (m.workers.length) {
    const rows = m.workers.map((w) => el("tr", {},
      el("td", {}, w.worker_id), el("td", {}, w.state), el("td", {}, `${w.running} / ${w.capacity}`),
      el("td", {}, w.waiting), el("td", {}, `${(w.kv_usage * 100).toFixed(1)} %`),
      el("td", {}, `${w.heartbeat_age_s.toFixed(1)} s`)));
    card.append(el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["worker", "state", "load", "waiting", "KV", "heartbeat"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows))));
  } else {
    card.append(el("p", { class: "muted" }, "No live workers (scaled to zero: the first request starts one)."));
  }
  return card;
}

function queueTable(fleet) {
  const head = ["model", ...fleet.models[0]?.queues.map((q) => `${q.name} backlog`) || [], "in flight",
    "arrivals", "queue, last 15 min", "TTFT p50 / p95, last 15 min"];
  const rows = fleet.models.map((m) => {
    const added = m.queues.reduce((s, q) => s + q.entries_added, 0);
    const last = state.lastAdded[m.name];
    const rate = last && fleet.at > last.at ? (added - last.added) / (fleet.at - last.at) : 0;
    state.lastAdded[m.name] = { at: fleet.at, added };
    const backlog = m.queues.reduce((s, q) => s + q.backlog, 0);
    const inFlight = m.queues.reduce((s, q) => s + q.in_flight, 0);
    const series = (state.history[m.name] ||= []);
    series.push({ at: fleet.at, backlog, inFlight });
    while (series.length && series[0].at < fleet.at - HISTORY_S) series.shift();
    const ttft = m.queues[0].ttft;  // interactive: the latency users wait on
    const latest = ttft[ttft.length - 1];
    const cells = [m.name, ...m.queues.map((q) => q.backlog), inFlight, `${rate.toFixed(2)}/s`,
      chart(series, QUEUE_LINES, fleet.at, "backlog and in flight"),
      el("span", {}, el("span", { class: "ttft-latest" },
        latest ? `${Math.round(latest.p50_ms)} / ${Math.round(latest.p95_ms)} ms` : "no requests"),
        chart(ttft, TTFT_LINES, fleet.at, "interactive TTFT p50 and p95 in ms"))];
    // data-label: on a phone the table stacks, one labelled line per cell (console.css)
    return el("tr", {}, ...cells.map((cell, i) => el("td", { "data-label": head[i], class: i === cells.length - 1 ? "ttft" : "" }, cell)));
  });
  return el("div", { class: "scroll" }, el("table", { class: "queue-table" },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, ...rows)));
}

const QUEUE_LINES = [["backlog", "", "#1f6feb"], ["inFlight", "4 3", "#b35900"]];
const TTFT_LINES = [["p50_ms", "", "#1a7f37"], ["p95_ms", "4 3", "#8250df"]];

function chart(series, lines, now, what) {
  // Inline SVG over the last 15 min: one polyline per [field, dash, colour] of `lines`.
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 300 60");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const top = Math.max(1, ...series.map((p) => Math.max(...lines.map(([field]) => p[field]))));
  svg.setAttribute("aria-label", `${what}, last 15 minutes, peak ${Math.round(top)}`);
  for (const [field, dash, colour] of lines) {
    const y = (p) => (58 - p[field] / top * 54).toFixed(1);
    const points = series.map((p) => `${Math.max(0, 300 - (now - p.at) / HISTORY_S * 300).toFixed(1)},${y(p)}`);
    if (series.length === 1) points.unshift(`0,${y(series[0])}`);  // one sample: a flat line
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colour);
    line.setAttribute("stroke-width", "1.5");
    if (dash) line.setAttribute("stroke-dasharray", dash);
    svg.append(line);
  }
  return svg;
}

function eventItem(e) {
  return el("li", { "data-model": e.model },
    el("time", { datetime: new Date(e.at * 1000).toISOString() }, new Date(e.at * 1000).toLocaleTimeString()), " ",
    el("a", { href: `#model-${e.model}`, class: "event-model" }, e.model), " ",
    el("span", { class: `dir-${e.direction}` }, `${e.from_replicas} → ${e.to_replicas}`), " ",
    el("span", { class: "reason" }, e.reason));
}

// ---- playground ---------------------------------------------------------------------------

async function startPlayground() {
  try {
    const models = (await api("/v1/models")).data;
    const select = $("model-select");
    const chosen = select.value;
    state.models = Object.fromEntries(models.map((m) => [m.id, m]));
    select.replaceChildren(...models.map((m) => el("option", { value: m.id }, `${m.id}${m.ready ? "" : " (cold)"}`)));
    if (chosen && state.models[chosen]) select.value = chosen;
  } catch (error) {
    $("chat-status").textContent = `Cannot list models: ${error.message}`;
  }
  updateSnippets();
}

function requestBody() {
  return {
    model: $("model-select").value,
    messages: [{ role: "user", content: $("prompt").value || "Say hello" }],
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
    top_p: Number($("top-p").value),
    stream: true,
  };
}

function updateSnippets() {
  const body = requestBody();
  const base = `${location.origin}/v1`;
  $("curl-snippet").textContent = `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer $PAGEFLEET_API_KEY" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
  $("python-snippet").textContent = `import os\nfrom openai import OpenAI\n\n` +
    `client = OpenAI(base_url=${JSON.stringify(base)}, api_key=os.environ.get("PAGEFLEET_API_KEY", "none"))\n` +
    `stream = client.chat.completions.create(\n    model=${JSON.stringify(body.model)},\n` +
    `    messages=${JSON.stringify(body.messages)},\n    temperature=${body.temperature}, max_tokens=${body.max_tokens}, top_p=${body.top_p},\n` +
    `    stream=True,\n)\nfor chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or "", end="", flush=True)\n`;
}

async function sendChat(event) {
  event.preventDefault();
  const body = { ...requestBody(), stream_options: { include_usage: true } };
  const model = state.models && state.models[body.model];
  $("transcript").append(el("div", { class: "msg user" }, body.messages[0].content));
  const reply = el("div", { class: "msg assistant" });
  $("transcript").append(reply);
  $("chat-status").textContent = model && !model.ready ? "Starting a worker… (the model is cold)" : "Waiting for the first token…";
  $("ttft").textContent = "–"; $("tps").textContent = "–";
  $("send").disabled = true; $("stop").disabled = false;
  state.abort = new AbortController();
  const started = performance.now();
  let first = null, tokens = 0, usageTokens = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", body: JSON.stringify(body), signal: state.abort.signal,
      headers: headers({ "Content-Type": "application/json" }),
    });
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status}: ${message}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) !== -1) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of frame.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usageTokens = chunk.usage.completion_tokens;
          const text = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
          if (text) {
            if (first === null) {
              first = performance.now();
              $("ttft").textContent = `${Math.round(first - started)} ms`;
              $("chat-status").textContent = "Streaming…";
            }
            tokens += 1;
            reply.textContent += text;
          }
        }
      }
    }
    const count = usageTokens ?? tokens;
    const seconds = first === null ? 0 : (performance.now() - first) / 1000;
    $("tps").textContent = seconds > 0 && count > 1 ? ((count - 1) / seconds).toFixed(1) : "–";
    $("chat-status").textContent = `Done: ${count} tokens.`;
    startPlayground();  // the model is warm now: refresh its "(cold)" mark
  } catch (error) {
    $("chat-status").textContent = error.name === "AbortError" ? "Stopped." : `Error: ${error.message}`;
  } finally {
    $("send").disabled = false; $("stop").disabled = true;
    state.abort = null;
  }
}

async function copyText(text) {
  // navigator.clipboard exists only in a secure context (https or localhost); a console served
  // over plain http on another host copies through a selected, off-screen textarea instead.
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall back */ }
  }
  const buffer = el("textarea", { class: "copy-buffer", readonly: "", tabindex: "-1", "aria-hidden": "true" });
  buffer.value = text;
  document.body.append(buffer);
  buffer.select();
  let copied = false;
  try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
  buffer.remove();
  return copied;
}

async function copySnippet(button) {
  const label = button.dataset.label || (button.dataset.label = button.textContent);
  const snippet = $(button.dataset.target);
  if (await copyText(snippet.textContent)) {
    button.textContent = "Copied";
  } else {  // no clipboard at all: select the snippet so Ctrl+C / long-press copies it
    window.getSelection().selectAllChildren(snippet);
    button.textContent = "Selected: press Ctrl+C";
  }
  $("copy-status").textContent = button.textContent;
  setTimeout(() => { button.textContent = label; }, 2000);
}

// ---- jobs ---------------------------------------------------------------------------------

async function refreshJobs() {
  let jobs;
  try {
    jobs = (await api("/v1/jobs?limit=100")).data;
  } catch (error) {
    $("jobs").replaceChildren(el("p", { class: "notice" }, `Cannot list jobs: ${error.message}`));
    return;
  }
  if (!jobs.length) { $("jobs").replaceChildren(el("p", { class: "muted" }, "No jobs yet.")); return; }
  const when = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");
  const rows = jobs.map((j) => {
    const outcome = j.result || j.error;
    return el("tr", { "data-job": j.id }, el("td", {}, el("code", {}, j.id)), el("td", {}, j.endpoint),
      el("td", { class: `status status-${j.status}` }, j.status), el("td", {}, when(j.created_at)),
      el("td", {}, when(j.finished_at)),
      el("td", {}, outcome ? el("details", {}, el("summary", {}, j.error ? "error" : "result"),
        el("pre", {}, JSON.stringify(outcome, null, 2))) : "–"));
  });
  $("jobs").replaceChildren(el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ...["job", "endpoint", "status", "created", "finished", "outcome"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows))));
}

// ---- wiring -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.view));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key-input").value.trim());
    $("key-input").value = "";
    start();
  });
  $("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-form").addEventListener("input", updateSnippets);
  $("stop").addEventListener("click", () => state.abort && state.abort.abort());
  for (const button of document.querySelectorAll(".copy")) {
    button.addEventListener("click", () => copySnippet(button));
  }
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = true;
  start();
});
