"""The review page's HTML, CSS and JavaScript, all inline (no framework, no CDN: it works offline).

Every value from the server reaches the DOM through ``textContent`` (never ``innerHTML``), so a text holding
``<script>`` shows as text. The token lives in ``sessionStorage`` (gone when the tab closes) and is sent as the
bearer header. Keys: 1-9 label with the task's labels in order, s skips, u undoes the reviewer's last label.
"""

from __future__ import annotations

__all__ = ["REVIEW_PAGE_HTML"]

REVIEW_PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Assay review</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d232b; }
  main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.5rem; }
  header { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; }
  h1 { font-size: 1.4rem; margin: 0.5rem 0; }
  .card { background: #fff; border: 1px solid #d5d9e0; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }
  #text { font-size: 1.2rem; white-space: pre-wrap; word-break: break-word; margin: 0.25rem 0 0.75rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 0.25rem 0.75rem 0.25rem 0; border-bottom: 1px solid #eceef2; }
  .meta { color: #4b5563; font-size: 0.95rem; }
  .labels { display: flex; flex-wrap: wrap; gap: 0.5rem; margin-top: 0.75rem; }
  button { font: inherit; padding: 0.4rem 0.9rem; border: 1px solid #8a94a6; border-radius: 6px; background: #fff;
           cursor: pointer; }
  button:focus-visible, input:focus-visible { outline: 3px solid #2563eb; outline-offset: 2px; }
  button.label { background: #e8f0fe; border-color: #2563eb; }
  kbd { font: 0.85rem ui-monospace, monospace; border: 1px solid #aab; border-radius: 3px; padding: 0 0.3rem;
        background: #f3f4f6; }
  #status { min-height: 1.5rem; color: #b42318; }
  #done { font-size: 1.1rem; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<main>
  <header>
    <h1>Assay review</h1>
    <div class="meta"><span id="who"></span> <button id="logout" type="button" hidden>Log out</button></div>
  </header>
  <p id="status" role="status" aria-live="polite"></p>

  <form id="login" class="card" autocomplete="off">
    <label for="token">API token (role review or admin)</label><br>
    <input id="token" name="token" type="password" size="60" required autofocus>
    <button type="submit">Log in</button>
  </form>

  <section id="review" hidden>
    <p id="progress" class="meta"></p>
    <div id="item" class="card">
      <div class="meta">Text</div>
      <div id="text"></div>
      <p class="meta">Ensemble: <strong id="prediction"></strong> (confidence <span id="confidence"></span>),
        rule <strong id="rule"></strong>. <span id="reason"></span></p>
      <table>
        <thead><tr><th>Voter</th><th>Answer</th><th>Confidence</th></tr></thead>
        <tbody id="voters"></tbody>
      </table>
      <p id="labelled" class="meta"></p>
      <div class="labels" id="labels"></div>
      <div class="labels">
        <button type="button" id="skip"><kbd>s</kbd> Skip</button>
        <button type="button" id="undo"><kbd>u</kbd> Undo my last label</button>
      </div>
    </div>
    <p id="done" class="card" hidden>Every item in the queue has a label.</p>
    <div class="card">
      <h2 style="font-size:1.1rem;margin:0 0 0.5rem">Recent labels</h2>
      <table>
        <thead><tr><th>When</th><th>Reviewer</th><th>Label</th><th>Text</th></tr></thead>
        <tbody id="recent"></tbody>
      </table>
    </div>
  </section>
</main>
<script>
"use strict";
const KEY = "assay_review_token";
const state = { labels: [], items: [], index: 0, reviewer: "" };
const $ = (id) => document.getElementById(id);

function setStatus(message) { $("status").textContent = message || ""; }

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "-" : String(value);
  row.appendChild(td);
}

async function api(method, path, body) {
  const token = sessionStorage.getItem(KEY);
  const response = await fetch(path, {
    method,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY);
    showLogin((payload && payload.error) || "not allowed");
    throw new Error("auth");
  }
  if (!response.ok) {
    throw new Error((payload && payload.error) || ("HTTP " + response.status));
  }
  return payload;
}

function showLogin(message) {
  $("review").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("who").textContent = "";
  setStatus(message);
  $("token").focus();
}

function unlabelled(item) { return item.feedback.length === 0; }

function nextUnlabelled(from) {
  const n = state.items.length;
  for (let step = 0; step < n; step++) {
    const i = (from + step) % n;
    if (unlabelled(state.items[i])) return i;
  }
  return -1;
}

async function load(focusId) {
  const data = await api("GET", "/review/queue");
  state.labels = data.labels;
  state.items = data.items;
  state.reviewer = data.reviewer;
  $("login").hidden = true;
  $("review").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = "Reviewer: " + data.reviewer;
  renderRecent(data.recent);
  if (focusId !== undefined) {
    const at = state.items.findIndex((item) => item.prediction_id === focusId);
    state.index = at >= 0 ? at : 0;
  }
  if (state.index >= state.items.length) state.index = 0;
  render();
}

function renderRecent(recent) {
  const body = $("recent");
  body.replaceChildren();
  const texts = new Map(state.items.map((item) => [item.prediction_id, item.text]));
  for (const row of recent) {
    const tr = document.createElement("tr");
    cell(tr, row.at);
    cell(tr, row.reviewer);
    cell(tr, row.label);
    const text = texts.get(row.prediction_id) || row.prediction_id;
    cell(tr, text.length > 60 ? text.slice(0, 60) + "..." : text);
    body.appendChild(tr);
  }
}

function render() {
  const n = state.items.length;
  const done = state.items.filter((item) => !unlabelled(item)).length;
  $("progress").textContent = n === 0
    ? "The queue is empty."
    : "Item " + (state.index + 1) + " of " + n + " (" + done + " labelled)";
  $("done").hidden = !(n > 0 && done === n);
  $("item").hidden = n === 0;
  if (n === 0) return;
  const item = state.items[state.index];
  $("item").dataset.predictionId = item.prediction_id;
  $("text").textContent = item.text;
  $("prediction").textContent = item.prediction;
  $("confidence").textContent = Number(item.confidence).toFixed(2);
  $("rule").textContent = item.rule;
  $("reason").textContent = item.abstain_reason || item.reason || "";
  const voters = $("voters");
  voters.replaceChildren();
  for (const v of item.voters) {
    const tr = document.createElement("tr");
    cell(tr, v.voter);
    cell(tr, v.label === null ? "abstained" : v.label);
    cell(tr, v.confidence === null ? null : Number(v.confidence).toFixed(2));
    voters.appendChild(tr);
  }
  $("labelled").textContent = item.feedback.length
    ? "Labelled: " + item.feedback.map((f) => f.label + " by " + f.reviewer + " at " + f.at).join("; ")
    : "Not labelled yet.";
  const buttons = $("labels");
  buttons.replaceChildren();
  state.labels.slice(0, 9).forEach((label, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "label";
    const key = document.createElement("kbd");
    key.textContent = String(i + 1);
    button.append(key, " " + label);
    button.addEventListener("click", () => label_(label));
    buttons.appendChild(button);
  });
}

let busy = false;
async function guarded(work) {
  if (busy) return;
  busy = true;
  try { await work(); setStatus(""); }
  catch (error) { if (error.message !== "auth") setStatus(error.message); }
  finally { busy = false; }
}

function label_(label) {
  return guarded(async () => {
    const item = state.items[state.index];
    if (!item) return;
    await api("POST", "/review/label", { prediction_id: item.prediction_id, label: label });
    const from = state.index;
    await load();
    const next = nextUnlabelled((from + 1) % Math.max(1, state.items.length));
    state.index = next >= 0 ? next : from;
    render();
  });
}

async function start() {
  await load(undefined);
  state.index = Math.max(0, nextUnlabelled(0));
  render();
}

function skip() {
  if (state.items.length === 0) return;
  state.index = (state.index + 1) % state.items.length;
  render();
}

function undo() {
  return guarded(async () => {
    const result = await api("POST", "/review/undo", {});
    await load(result.undone.prediction_id);
  });
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  guarded(start);
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin("Logged out."); });
$("skip").addEventListener("click", skip);
$("undo").addEventListener("click", undo);

document.addEventListener("keydown", (event) => {
  if ($("review").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target instanceof HTMLInputElement) return;
  if (/^[1-9]$/.test(event.key)) {
    const label = state.labels[Number(event.key) - 1];
    if (label !== undefined) { event.preventDefault(); label_(label); }
  } else if (event.key === "s") {
    event.preventDefault(); skip();
  } else if (event.key === "u") {
    event.preventDefault(); undo();
  }
});

if (sessionStorage.getItem(KEY)) {
  guarded(start);
} else {
  showLogin("");
}
</script>
</body>
</html>
"""
