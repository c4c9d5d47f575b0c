// stepkit dev dashboard: vanilla JS over the dev server's /api (no build step, no CDN).
"use strict";

const REFRESH_MS = 2000;  // unless GET /api/about says otherwise
const state = {
  about: { target: "dev", label: "", refresh_seconds: REFRESH_MS / 1000, page_size: 100, disabled: {} },
  selected: null, openSteps: new Set(), functionsLoaded: false, limit: 100,
  event: null, eventDetail: null,  // the event shown, and its /api/events/{id} detail
  invokeFn: null,                  // the function the invoke form is for
  starting: null,                  // a run this page started, until the API has it
  flash: null,                     // {runId, nodes}: a note shown once that run is on screen
  keysDrawn: null,                 // the keys list as last drawn (JSON), to draw it on a change
  keyGrace: {},                    // grace typed beside a key, by id, kept across redraws
};
const MAX_RUNS = 1000;  // the API's largest page

// -- helpers ---------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** Build an element: h("td", {class: "x", title: "y"}, "text", childNode, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    setConnected(false);
    throw new Error("cannot reach the dev server: " + err.message);
  }
  setConnected(true);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || resp.status + " " + resp.statusText);
  return data;
}

function setConnected(ok) {
  const el = $("conn");
  el.className = "conn " + (ok ? "ok" : "down");
  el.textContent = ok ? "connected" : "disconnected";
}

function pill(status) {
  return h("span", { class: "pill s-" + status }, status);
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const zone = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
    .formatToParts(d).find((p) => p.type === "timeZoneName");
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " +
    d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0") +
    (zone ? " " + zone.value : "");
}

function timeCell(iso) {
  return h("td", { class: "mono", title: iso || "" }, fmtTime(iso));
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const parts = [];
  let rest = Math.round(s);
  for (const [u, n] of units) {
    if (rest >= n) { parts.push(Math.floor(rest / n) + u); rest %= n; }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function errorText(err) {
  if (!err) return "";
  return err.name + ": " + err.message + (err.stack ? "\n\n" + err.stack : "");
}

function message(el, text, ok) {
  el.textContent = text;
  el.className = "result " + (ok ? "ok" : "error");
}

/** The page of a run or an event: ids may hold "%", "/", "#", "?" or spaces, so encoded. */
function pageHash(kind, id) {
  return "#" + kind + "=" + encodeURIComponent(id);
}

/** The id in ``location.hash`` for ``kind`` ("run", "event", "q"), or null. */
function hashId(kind) {
  const m = new RegExp("^#" + kind + "=(.+)$").exec(location.hash);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch (err) {  // typed by hand with a bare "%": take it as it is
    return m[1];
  }
}

function runLink(runId) {
  return h("a", { href: pageHash("run", runId), "data-run-link": runId }, runId);
}

/** A success message made of text and nodes (links to runs). */
function richMessage(el, ...nodes) {
  el.replaceChildren(...nodes);
  el.className = "result ok";
}

/** Parse a JSON object typed by hand: [value, null] or [null, "what is wrong"]. */
function parseObject(raw) {
  let data;
  try {
    data = JSON.parse(raw.trim() || "{}");
  } catch (err) {
    return [null, "data is not valid JSON: " + err.message + "; nothing was sent"];
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    return [null, "data must be a JSON object, like {\"id\": 1}; nothing was sent"];
  }
  return [data, null];
}

// -- functions -------------------------------------------------------------------------------

function triggerText(t) {
  if (t.type === "cron") return "cron " + t.cron;
  return "event " + t.event + (t.if ? " if " + t.if : "");
}

async function loadFunctions() {
  const data = await api("GET", "/api/functions");
  $("app-id").textContent = "app " + data.app_id;
  const list = $("functions");
  list.replaceChildren();
  if (!data.functions.length) list.append(h("li", { class: "muted" }, "no functions registered"));
  const select = $("filter-function");
  const chosen = select.value;
  select.replaceChildren(h("option", { value: "" }, "all"));
  for (const fn of data.functions) {
    list.append(h("li", { "data-function": fn.id, class: fn.id === state.invokeFn ? "invoking" : null },
      h("span", { class: "fn-id", title: "show runs of " + fn.id, onclick: () => filterBy(fn.id) }, fn.id),
      fn.triggers.map((t) => h("span", { class: "trigger" }, triggerText(t))),
      h("span", { class: "trigger" }, "retries " + fn.retries),
      h("div", { class: "fn-actions" },
        h("button", { type: "button", class: "mini", "data-invoke": fn.id,
          title: "start a run of " + fn.id + " now, with data you give",
          onclick: () => openInvoke(fn.id) }, "Invoke"),
        fn.triggers.some((t) => t.type === "cron")
          ? h("button", { type: "button", class: "mini", "data-fire": fn.id, title: "fire its cron now",
              onclick: () => fireCron(fn.id) }, "Fire cron now")
          : null,
        pauseButton(fn)),
      pausedBadge(fn),
      Object.keys(fn.flow || {}).map((name) =>
        h("span", { class: "trigger flow", title: json(fn.flow[name]) }, name.replace("_", " "))),
      (fn.windows || []).map((w) => h("div", { class: "why window" }, w.message))));
    select.append(h("option", { value: fn.id }, fn.id));
  }
  select.value = chosen;
  state.functionsLoaded = true;
}

function filterBy(fnId) {
  $("filter-function").value = fnId;
  refreshRuns();
}

// -- invoke a function now ---------------------------------------------------------------------

/** Open the invoke form for a function, with ``data`` (an object) in it when given. */
function openInvoke(fnId, data) {
  state.invokeFn = fnId;
  $("invoke-panel").hidden = false;
  $("invoke-fn").textContent = fnId;
  if (data !== undefined) $("invoke-data").value = json(data);
  $("invoke-result").textContent = "";
  for (const li of $("functions").querySelectorAll("li[data-function]")) {
    li.classList.toggle("invoking", li.dataset.function === fnId);
  }
  $("invoke-panel").scrollIntoView({ block: "nearest" });
  $("invoke-data").focus();
}

function closeInvoke() {
  state.invokeFn = null;
  $("invoke-panel").hidden = true;
  for (const li of $("functions").querySelectorAll("li.invoking")) li.classList.remove("invoking");
}

async function invokeFunction(ev) {
  ev.preventDefault();
  const out = $("invoke-result");
  const fnId = state.invokeFn;
  if (!fnId) return;
  const [data, problem] = parseObject($("invoke-data").value);
  if (problem) { message(out, problem, false); return; }
  const button = $("invoke-submit");
  button.disabled = true;
  try {
    const res = await api("POST", "/api/functions/" + encodeURIComponent(fnId) + "/invoke", { data });
    richMessage(out, "started run ", runLink(res.run_id));
    state.flash = { runId: res.run_id, nodes: ["invoked " + fnId + " by hand"] };
    state.starting = res.run_id;
    select(res.run_id);
  } catch (err) {
    message(out, err.message, false);
  } finally {
    button.disabled = false;
  }
  setTimeout(refreshAll, 300);
}

// -- runs ------------------------------------------------------------------------------------

async function refreshRuns() {
  const params = new URLSearchParams({ limit: String(state.limit) });
  const fn = $("filter-function").value;
  const status = $("filter-status").value;
  const since = $("filter-since").value;
  if (fn) params.set("function_id", fn);
  if (status) params.set("status", status);
  if (since) params.set("since", new Date(Date.now() - Number(since) * 1000).toISOString());
  const body = $("runs");
  let data;
  try {
    data = await api("GET", "/api/runs?" + params);
  } catch (err) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, err.message)));
    return;
  }
  body.replaceChildren();
  $("more-runs").hidden = data.runs.length < state.limit || state.limit >= MAX_RUNS;
  if (!data.runs.length) {
    body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" },
      "no runs yet — send an event to start one")));
  }
  for (const run of data.runs) {
    body.append(h("tr", {
      class: run.run_id === state.selected ? "selected" : null,
      "data-run-id": run.run_id,
      onclick: () => select(run.run_id),
    },
      h("td", {}, pill(run.status),
        run.waiting ? h("div", { class: "why", title: run.waiting.message }, run.waiting.message) : null),
      h("td", { class: "mono" }, run.run_id),
      h("td", {}, run.function_id),
      h("td", { class: "mono" }, run.event || "—"),
      timeCell(run.created_at),
      h("td", {}, fmtDuration(run.duration_ms))));
  }
}

// -- one run ---------------------------------------------------------------------------------

function select(runId) {
  if (location.hash !== pageHash("run", runId)) location.hash = pageHash("run", runId);
  else route();
}

function route() {
  const q = hashId("q");
  if (q !== null) { findById(q); return; }
  const eventId = hashId("event");
  if (eventId !== state.event) {
    state.event = eventId;
    state.eventDetail = null;
    refreshEventDetail().then(renderEvent);
  }
  renderEvent();
  const runId = hashId("run");
  if (runId !== state.selected) {
    state.openSteps.clear();
    $("run-event").open = false;
    $("run-output").open = true;
    $("run-error").open = true;
  }
  state.selected = runId;
  const flash = state.flash;
  state.flash = null;
  if (flash && flash.runId === runId) richMessage($("run-message"), ...flash.nodes);
  else $("run-message").textContent = "";
  for (const tr of $("runs").querySelectorAll("tr[data-run-id]")) {
    tr.classList.toggle("selected", tr.dataset.runId === runId);
  }
  if (!runId) { $("run-panel").hidden = true; return; }
  refreshRun();
}

async function refreshRun() {
  const runId = state.selected;
  if (!runId) return;
  let run;
  try {
    run = await api("GET", "/api/runs/" + encodeURIComponent(runId));
  } catch (err) {
    if (runId !== state.selected) return;
    // A run just invoked or rerun from here is queued until a worker creates it: say so.
    const queued = state.starting === runId;
    state.run = null;
    $("run-panel").hidden = false;
    $("run-id").textContent = runId;
    $("run-status").replaceChildren(queued ? pill("Queued") : "");
    for (const id of ["cancel-run", "rerun-run", "invoke-run-fn"]) $(id).disabled = true;
    $("run-meta").replaceChildren(...(queued
      ? [h("dt", {}, "Doing"), h("dd", {}, "queued: it starts when a worker picks it up")] : []));
    if (!queued) message($("run-message"), err.message, false);
    $("steps").replaceChildren();
    for (const id of ["run-event", "run-output", "run-error"]) $(id).hidden = true;
    return;
  }
  if (runId !== state.selected) return;
  if (state.starting === runId) state.starting = null;
  renderRun(run);
}

function renderRun(run) {
  state.run = run;
  $("run-panel").hidden = false;
  $("run-id").textContent = run.run_id;
  $("run-status").replaceChildren(pill(run.status));
  $("cancel-run").disabled = run.status !== "Running" && run.status !== "Blocked";
  $("rerun-run").disabled = false;
  $("invoke-run-fn").disabled = false;

  const meta = [
    ["Function", run.function_id],
    ["Event", run.event || "—"],
    ["Started", fmtTime(run.created_at)],
    ["Ended", fmtTime(run.ended_at)],
    ["Duration", fmtDuration(run.duration_ms)],
  ];
  if (run.failed_attempts) meta.push(["Handler failures", String(run.failed_attempts)]);
  if (run.parent) meta.push(["Invoked by", run.parent.run_id + " (" + run.parent.key + ")"]);
  if (run.rerun_of) {
    const from = run.rerun_of.from_step;
    meta.push(["Rerun of", [runLink(run.rerun_of.run_id),
                            from ? " from step '" + from + "'" : ""]]);
  }
  if ((run.reruns || []).length) {
    meta.push(["Reruns", run.reruns.flatMap((r, i) => [i ? ", " : "", runLink(r.run_id),
                                                      r.from_step ? " (from '" + r.from_step + "')" : ""])]);
  }
  if (run.waiting) meta.push(["Waiting", run.waiting.message]);
  (run.activity || []).forEach((a, i) => meta.push([i === 0 ? "Doing" : "", a.message]));
  if (!run.waiting && run.error) meta.push(["Error", run.error.name + ": " + run.error.message]);
  $("run-meta").replaceChildren(...meta.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));

  renderSteps(run);
  setIO("run-event", run.events.length === 1 ? run.events[0] : run.events, false);
  setIO("run-output", run.status === "Completed" ? run.output : undefined, false);
  setIO("run-error", run.error ? errorText(run.error) : undefined, true);
}

function setIO(id, value, isError) {
  const el = $(id);
  el.hidden = value === undefined;
  const pre = el.querySelector("pre");
  pre.className = isError ? "error" : "";
  pre.textContent = typeof value === "string" ? value : json(value);
}

function span(run) {
  const t = (iso) => (iso ? Date.parse(iso) : null);
  const start = t(run.created_at);
  let end = t(run.ended_at);
  if (end === null) {
    end = start;
    for (const s of run.steps) end = Math.max(end, t(s.ended_at) || t(s.started_at) || start);
  }
  return { start, end: Math.max(end, start + 1), t };
}

function stepBar(step, sp) {
  const from = sp.t(step.started_at);
  if (from === null) return h("div", { class: "bar-track" });
  const to = sp.t(step.ended_at) || sp.end;
  const total = sp.end - sp.start;
  const left = ((from - sp.start) / total) * 100;
  const width = Math.max(((to - from) / total) * 100, 0);
  const bar = h("div", { class: "bar s-" + step.status });
  bar.style.left = Math.min(left, 99) + "%";
  bar.style.width = Math.min(width, 100 - left) + "%";
  return h("div", { class: "bar-track" }, bar);
}

function stepNote(step) {
  const d = step.detail || {};
  if (step.status === "Sleeping" && step.wake_at) return "until " + fmtTime(step.wake_at);
  if (step.status === "Retrying" && step.wake_at) return "next attempt " + fmtTime(step.wake_at);
  if (step.kind === "wait_for_event" && d.event) return "for " + d.event;
  if (step.kind === "invoke" && d.function_id) return d.function_id + " → " + (d.child_run_id || "");
  return null;
}

function renderSteps(run) {
  const body = $("steps");
  body.replaceChildren();
  if (!run.steps.length) {
    body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "no steps yet")));
    return;
  }
  const sp = span(run);
  for (const step of run.steps) {
    const attempts = step.max_attempts ? step.attempts + " / " + step.max_attempts : String(step.attempts);
    const note = stepNote(step);
    const open = state.openSteps.has(step.key);
    body.append(h("tr", {
      class: "step", "data-step-key": step.key, title: "show output and error",
      onclick: () => toggleStep(step.key, run),
    },
      h("td", {}, pill(step.status)),
      h("td", {}, h("code", {}, step.key), note ? h("div", { class: "muted" }, note) : null,
        step.status === "Sleeping" && (run.status === "Running" || run.status === "Blocked")
          ? h("button", { type: "button", class: "skip", "data-skip": step.key,
              disabled: Boolean(disabledWhy("skip_sleep")),
              title: disabledWhy("skip_sleep") || "end this sleep now (dev server only)",
              onclick: (ev) => { ev.stopPropagation(); skipSleep(run.run_id, step.key); } }, "Skip sleep")
          : null,
        h("button", { type: "button", class: "mini outline", "data-rerun-from": step.key,
          title: "start a new run that reuses the results recorded before this step, " +
            "then performs this step and what follows again",
          onclick: (ev) => { ev.stopPropagation(); rerunRun(step.key); } }, "Rerun from here")),
      h("td", {}, step.kind),
      h("td", {}, attempts),
      timeCell(step.started_at),
      h("td", {}, fmtDuration(step.duration_ms)),
      h("td", {}, stepBar(step, sp))));
    if (open || step.error) {
      const cells = [];
      if (open && step.output !== null) cells.push(h("pre", {}, json(step.output)));
      if (step.error) cells.push(h("pre", { class: "error" }, open ? errorText(step.error) : step.error.name + ": " + step.error.message));
      const failures = (step.detail || {}).errors || [];
      if (failures.length) {
        cells.push(h("ol", { class: "attempts" }, failures.map((f) =>
          h("li", { "data-attempt": f.attempt },
            "attempt " + f.attempt + " failed " + fmtTime(f.at) + ": " + f.error))));
      }
      if (open && Object.keys(step.detail || {}).length) cells.push(h("pre", {}, json(step.detail)));
      if (open && !cells.length) cells.push(h("div", { class: "muted" }, "no output"));
      body.append(h("tr", { class: "step-io" }, h("td", { colspan: 7 }, cells)));
    }
  }
}

// -- pause and resume a function ----------------------------------------------------------------

/** The "paused" badge of a function (its reason and since as the title), or nothing. */
function pausedBadge(fn) {
  if (!fn.paused) return null;
  const why = fn.paused.reason ? ": " + fn.paused.reason : "";
  return h("div", { class: "why paused", "data-paused": fn.id,
    title: "paused since " + fmtTime(fn.paused.since) }, "paused" + why);
}

function pauseButton(fn) {
  return fn.paused
    ? h("button", { type: "button", class: "mini", "data-resume": fn.id,
        title: "resume: held runs and events go on within a minute",
        onclick: () => setPaused(fn.id, false) }, "Resume")
    : h("button", { type: "button", class: "mini outline", "data-pause": fn.id,
        title: "pause: no run starts and no step runs; nothing sent to it is lost",
        onclick: () => setPaused(fn.id, true) }, "Pause");
}

async function setPaused(fnId, paused) {
  let body;
  if (paused) {
    const reason = window.prompt("Pause " + fnId + ": why? (optional)", "");
    if (reason === null) return;  // the prompt was cancelled
    body = { reason: reason || null };
  }
  try {
    await api("POST", "/api/functions/" + encodeURIComponent(fnId) + (paused ? "/pause" : "/resume"), body);
  } catch (err) {
    message($("send-result"), err.message, false);
  }
  loadFunctions();
}

async function fireCron(fnId) {
  try {
    const res = await api("POST", "/api/functions/" + encodeURIComponent(fnId) + "/cron");
    select(res.run_id);
  } catch (err) {
    message($("send-result"), err.message, false);
  }
  setTimeout(refreshAll, 300);
}

async function skipSleep(runId, key) {
  try {
    const res = await api("POST", "/api/runs/" + encodeURIComponent(runId) + "/steps/" +
      encodeURIComponent(key) + "/skip");
    message($("run-message"), res.skipped ? "sleep '" + key + "' skipped" : "not sleeping", res.skipped);
  } catch (err) {
    message($("run-message"), err.message, false);
  }
  setTimeout(refreshAll, 300);
}

function toggleStep(key, run) {
  if (state.openSteps.has(key)) state.openSteps.delete(key);
  else state.openSteps.add(key);
  renderSteps(run);
}

async function cancelRun() {
  const out = $("run-message");
  try {
    const res = await api("POST", "/api/runs/" + encodeURIComponent(state.selected) + "/cancel");
    if (res.queued) message(out, "cancel sent to its function's queue: its worker cancels it", true);
    else message(out, res.cancelled ? "cancelled" : "not cancelled: the run is " + res.status, res.cancelled);
  } catch (err) {
    message(out, err.message, false);
  }
  refreshAll();
}

/** Rerun the selected run: whole, or from step ``fromStep`` (a fork), then show the new run. */
async function rerunRun(fromStep) {
  const original = state.selected;
  const body = typeof fromStep === "string" ? { from: fromStep } : undefined;
  try {
    const res = await api("POST", "/api/runs/" + encodeURIComponent(original) + "/rerun", body);
    state.flash = { runId: res.run_id, nodes: ["started as a rerun of ", runLink(original),
      body ? " from step '" + fromStep + "' (the results before it reused)" : ""] };
    state.starting = res.run_id;
    select(res.run_id);
  } catch (err) {
    message($("run-message"), err.message, false);
  }
  setTimeout(refreshAll, 300);
}

function invokeRunFunction() {
  const run = state.run;
  if (!run) return;
  const first = run.events[0];
  openInvoke(run.function_id, first && first.data && typeof first.data === "object" ? first.data : {});
}

// -- events and search ---------------------------------------------------------------------------

/** The events list: summaries only (no data); a payload is fetched when its event is opened. */
async function refreshEvents() {
  const data = await api("GET", "/api/events?limit=" + state.about.page_size + "&summary=true");
  state.events = data.events;
  const body = $("events");
  body.replaceChildren();
  if (!data.events.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "no events yet")));
  for (const e of data.events) {
    body.append(h("tr", { "data-event-id": e.id, onclick: () => { location.hash = pageHash("event", e.id); } },
      h("td", { class: "mono" }, e.id),
      h("td", { class: "mono" }, e.name),
      timeCell(e.ts ? new Date(e.ts).toISOString() : null),
      e.runs ? h("td", {}, String(e.runs.length))
        : h("td", { class: "muted", title: disabledWhy("event_runs") || "" }, "open it")));
  }
  await refreshEventDetail();
  renderEvent();
}

/** Fetch the shown event's detail (its payload, the runs it started, the waits it resolved). */
async function refreshEventDetail() {
  const id = state.event;
  if (!id) return;
  let detail;
  try {
    detail = await api("GET", "/api/events/" + encodeURIComponent(id));
  } catch (err) {
    detail = { error: err.message };
  }
  if (id === state.event) state.eventDetail = detail;
}

function runItem(r, extra) {
  return h("li", { "data-run-id": r.run_id },
    h("a", { href: pageHash("run", r.run_id) }, r.run_id), " ", r.function_id, " ", pill(r.status), extra || null);
}

function renderEvent() {
  const panel = $("event-panel");
  const detail = state.eventDetail && !state.eventDetail.error ? state.eventDetail : null;
  const e = detail || (state.event && (state.events || []).find((x) => x.id === state.event));
  panel.hidden = !state.event;
  if (!state.event) return;
  $("event-id").textContent = state.event;
  if (!e) {
    const missing = state.eventDetail ? state.eventDetail.error : "loading…";
    $("event-name-shown").textContent = "";
    $("event-meta").replaceChildren(h("dt", {}, state.eventDetail ? "Not found" : ""), h("dd", {}, missing));
    $("event-runs").replaceChildren();
    $("event-waits").replaceChildren();
    $("event-payload").textContent = "";
    return;
  }
  $("event-name-shown").textContent = e.name;
  $("event-meta").replaceChildren(h("dt", {}, "Name"), h("dd", {}, e.name),
    h("dt", {}, "Sent"), h("dd", {}, fmtTime(e.ts ? new Date(e.ts).toISOString() : null)));
  const runs = (e.runs || []).map((r) => runItem(r));
  $("event-runs").replaceChildren(...(runs.length ? runs : [h("li", { class: "muted" }, "no runs")]));
  $("event-waits").replaceChildren(...waitItems(detail));
  if (!detail) { $("event-payload").textContent = "loading…"; return; }
  const payload = { ...detail };
  delete payload.runs;
  delete payload.waits;
  $("event-payload").textContent = json(payload);
}

/** The "waits it resolved" list: loading, not known here (a deployed app), none, or the runs. */
function waitItems(detail) {
  if (!detail) return [h("li", { class: "muted" }, "loading…")];
  if (detail.waits === null) {  // a deployed app's table keeps no index of waits by event
    return [h("li", { class: "muted unavailable" },
      "not available: " + (disabledWhy("event_waits") || "not known here"))];
  }
  if (!detail.waits.length) return [h("li", { class: "muted" }, "no waiting run matched it")];
  return detail.waits.map((w) => runItem(w, h("span", { class: "muted" },
    " in step ", h("code", { "data-wait-step": w.step }, w.step))));
}

async function findById(id) {
  const out = $("search-result");
  id = id.trim();
  if (!id) return;
  try {
    await api("GET", "/api/runs/" + encodeURIComponent(id));
    message(out, "", true);
    location.hash = pageHash("run", id);
    return;
  } catch (err) { /* not a run: maybe an event */ }
  try {
    await api("GET", "/api/events/" + encodeURIComponent(id));
    message(out, "", true);
    location.hash = pageHash("event", id);
    return;
  } catch (err) { /* neither */ }
  message(out, "no run or recent event with id " + id, false);
}

// -- send an event ---------------------------------------------------------------------------

async function sendEvent(ev) {
  ev.preventDefault();
  const out = $("send-result");
  const name = $("event-name").value.trim();
  const [data, problem] = parseObject($("event-data").value);
  if (problem) { message(out, problem, false); return; }
  try {
    const res = await api("POST", "/api/events", { name, data });
    message(out, "sent " + res.ids.join(", "), true);
  } catch (err) {
    message(out, err.message, false);
  }
  setTimeout(refreshRuns, 300);
}

/** The badge and the panel's presence: the count only (listing reads, and leases, each message). */
async function refreshDeadLetters() {
  const data = await api("GET", "/api/dlq/count");
  const el = $("dlq");
  el.hidden = data.count === 0;
  el.textContent = data.count + (data.count === 1 ? " message" : " messages") +
    " in dead-letter queues: stepkit dlq list";
  $("dlq-panel").hidden = data.count === 0 && !state.deadLetters;
}

/** List the dead-lettered messages (on demand, never on refresh), each with a redrive button. */
async function showDeadLetters() {
  const data = await api("GET", "/api/dlq");
  state.deadLetters = data.messages;
  const body = $("dead-letters");
  body.replaceChildren();
  if (!data.messages.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "none")));
  for (const d of data.messages) {
    body.append(h("tr", { "data-dlq-id": d.message_id },
      h("td", { class: "mono" }, d.message_id),
      h("td", { class: "mono" }, d.queue),
      h("td", {}, d.kind, d.step ? h("div", { class: "muted" }, "step " + d.step) : null),
      h("td", {}, d.run_id ? runLink(d.run_id) : "—"),
      h("td", {}, d.error || "—"),
      h("td", {}, String(d.receive_count)),
      h("td", {}, h("button", { type: "button", class: "mini", "data-redrive": d.message_id,
        title: "send it back to " + (d.source || "its queue"), onclick: () => redrive(d.message_id) }, "Redrive"))));
  }
}

/** Redrive one dead-lettered message (``id``) or all of them, then list what is left. */
async function redrive(id) {
  const out = $("dlq-result");
  try {
    const res = await api("POST", "/api/dlq/redrive", id ? { id } : {});
    message(out, "redriven: " + res.redriven.length + (res.redriven.length === 1 ? " message" : " messages"), true);
  } catch (err) {
    message(out, err.message, false);
  }
  await showDeadLetters().catch(() => {});
  refreshDeadLetters().catch(() => {});
}

// -- event keys (GET/POST /api/keys) -------------------------------------------------------------

/** How a key is named on screen: its id, never its secret. */
function keyName(id) {
  return "sk_" + id + "_…";
}

/** A key's state: live, live until its revocation (a rotation's grace), or revoked. */
function keyState(k) {
  if (k.live && !k.revoked) return h("span", { class: "pill key-live" }, "live");
  const when = h("span", { class: "key-when", title: k.revoked || "" }, "at " + fmtTime(k.revoked));
  if (k.live) return [h("span", { class: "pill key-ending" }, "revokes"), " ", when];
  return [h("span", { class: "pill key-revoked" }, "revoked"), " ", when];
}

/** List the keys. Drawn again only when they changed, so a grace being typed is not lost. */
async function refreshKeys() {
  const body = $("keys");
  let data;
  try {
    data = await api("GET", "/api/keys");
  } catch (err) {
    state.keysDrawn = null;
    body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, err.message)));
    return;
  }
  const drawn = JSON.stringify(data.keys);
  if (drawn === state.keysDrawn) return;
  state.keysDrawn = drawn;
  body.replaceChildren();
  if (!data.keys.length) {
    body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" },
      "no event keys yet — create one to send events to POST /e/<key>")));
  }
  for (const k of data.keys) {
    body.append(h("tr", { "data-key-id": k.id, class: k.live ? null : "key-dead" },
      h("td", { class: "mono" }, keyName(k.id)),
      h("td", {}, k.label || "—"),
      h("td", { class: "key-prefixes" },
        k.prefixes.length ? h("code", {}, k.prefixes.join(", ")) : h("span", { class: "muted" }, "any name")),
      timeCell(k.created),
      h("td", { "data-key-state": k.id }, keyState(k)),
      h("td", { class: "mono" }, k.replaced_by ? keyName(k.replaced_by) : "—"),
      h("td", { class: "key-actions" }, k.live ? keyActions(k.id) : null)));
  }
}

/** Rotate (after a grace typed beside it) and Revoke, for a live key. */
function keyActions(id) {
  return [
    h("span", { class: "key-rotate" },
      h("input", { class: "grace", "data-grace": id, value: state.keyGrace[id] || "0s", size: 4,
        "aria-label": "grace before " + keyName(id) + " stops", title: "how long the old key still " +
          "works after a rotation, such as 1h (0s: it stops now)",
        oninput: (ev) => { state.keyGrace[id] = ev.target.value; } }),
      h("button", { type: "button", class: "mini", "data-rotate": id,
        title: "a new key with the same label and prefixes; this one stops after the grace",
        onclick: () => rotateKey(id) }, "Rotate")),
    h("button", { type: "button", class: "mini danger", "data-revoke": id,
      title: "stop this key now", onclick: () => revokeKey(id) }, "Revoke"),
  ];
}

/** Show a key just made, once: only in the box's text, which dismissing or leaving clears. */
function showKey(what, key) {
  $("key-once-what").textContent = what;
  $("key-secret").textContent = key;
  $("key-copied").textContent = "";
  $("key-once").hidden = false;
}

function forgetKey() {
  $("key-secret").textContent = "";
  $("key-once-what").textContent = "";
  $("key-copied").textContent = "";
  $("key-once").hidden = true;
}

/** Copy the shown key: the clipboard API where the page may use it (a secure context such as
 * localhost), else the selection, as over a LAN address served in plain HTTP. */
async function copyKey() {
  const el = $("key-secret");
  const out = $("key-copied");
  try {
    if (!navigator.clipboard) throw new Error("no clipboard here");
    await navigator.clipboard.writeText(el.textContent);
  } catch (err) {
    const range = document.createRange();
    range.selectNodeContents(el);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    if (!document.execCommand("copy")) {
      message(out, "could not copy: it is selected, copy it by hand", false);
      return;
    }
  }
  message(out, "copied", true);
}

async function createKey(ev) {
  ev.preventDefault();
  const out = $("keys-result");
  const label = $("key-label").value.trim();
  const prefixes = $("key-prefixes").value.split(",").map((p) => p.trim()).filter(Boolean);
  const button = $("key-create");
  button.disabled = true;
  try {
    const res = await api("POST", "/api/keys", { label, prefixes });
    showKey("New key " + keyName(res.id) + (label ? " (" + label + ")" : "") + ":", res.key);
    message(out, "", true);
    $("key-form").reset();
  } catch (err) {
    message(out, err.message, false);
  } finally {
    button.disabled = false;
  }
  await refreshKeys();
}

async function rotateKey(id) {
  const out = $("keys-result");
  const grace = (state.keyGrace[id] || "0s").trim() || "0s";
  try {
    const res = await api("POST", "/api/keys/" + encodeURIComponent(id) + "/rotate", { grace });
    delete state.keyGrace[id];
    const stops = res.replaces && res.replaces.live
      ? "; " + keyName(id) + " works until " + fmtTime(res.replaces.revoked) : "; " + keyName(id) + " is revoked";
    showKey("New key " + keyName(res.id) + " in the place of " + keyName(id) + stops + ":", res.key);
    message(out, "", true);
  } catch (err) {
    message(out, err.message, false);
  }
  await refreshKeys();
}

async function revokeKey(id) {
  const out = $("keys-result");
  if (!window.confirm("Revoke " + keyName(id) + "? Events sent with it are refused from now on " +
      "(within 30 s where the endpoint still holds it).")) return;
  try {
    await api("POST", "/api/keys/" + encodeURIComponent(id) + "/revoke");
    message(out, "revoked " + keyName(id), true);
  } catch (err) {
    message(out, err.message, false);
  }
  await refreshKeys();
}

// -- where the dashboard points ---------------------------------------------------------------

/** Why an action is not available here (``GET /api/about``'s ``disabled``), or null. */
function disabledWhy(action) {
  return (state.about.disabled || {})[action] || null;
}

/** Show what the control plane says of itself: the stack, stage and region, or the dev server. */
async function loadAbout() {
  try {
    state.about = { ...state.about, ...(await api("GET", "/api/about")) };
  } catch (err) {
    return;  // unreachable: the dev defaults, and the first refresh says what is wrong
  }
  const about = state.about;
  state.limit = about.page_size;
  $("more-runs").textContent = "Show " + about.page_size + " more";
  document.body.dataset.target = about.target;
  $("target-kind").textContent = about.target === "aws" ? "AWS" : about.target;
  $("target").textContent = about.label || "";
  $("refresh-every").textContent = "every " + about.refresh_seconds + " s";
  document.title = "stepkit " + (about.target === "aws" ? "AWS " + about.app_id : about.target);
}

// -- wiring ----------------------------------------------------------------------------------

async function refreshAll() {
  await loadFunctions().catch(() => {});  // (open debounce and batch windows change)
  await refreshRuns();
  await refreshRun();
  await refreshDeadLetters().catch(() => {});
  await refreshEvents().catch(() => {});
  await refreshKeys();
}

// -- bulk actions on the runs the filters show (POST /api/runs/bulk/...) ------------------------

/** The runs list's filters as the bulk API's filter. */
function bulkFilter() {
  const filter = {};
  const since = $("filter-since").value;
  if ($("filter-function").value) filter.function_id = $("filter-function").value;
  if ($("filter-status").value) filter.status = $("filter-status").value;
  if (since) filter.since = new Date(Date.now() - Number(since) * 1000).toISOString();
  return filter;
}

/** Count the matching runs (a dry run), ask, then act under the same operation. */
async function bulkAction(action) {
  const out = $("bulk-result");
  const path = "/api/runs/bulk/" + action;
  const filter = bulkFilter();
  try {
    const dry = await api("POST", path, { ...filter, dry_run: true });
    if (!dry.matched) {
      message(out, "no run matches: nothing to " + action, true);
      return;
    }
    const what = dry.matched + " run(s)" + (dry.capped ? " (the newest " + dry.matched + "; ask again for more)" : "");
    if (!window.confirm(action[0].toUpperCase() + action.slice(1) + " " + what + "?")) return;
    message(out, action + ": working on " + what + "…", true);
    const done = await api("POST", path, { ...filter, operation: dry.operation });
    const counts = Object.entries(done.counts).map(([k, v]) => k.replace(/_/g, " ") + " " + v);
    message(out, action + " " + done.operation + ": " + (counts.join(", ") || "nothing to do") +
      (done.capped ? " — more may match: press again" : ""), !done.counts.failed);
  } catch (err) {
    message(out, err.message, false);
  }
  refreshAll();
}

function start() {
  $("send-form").addEventListener("submit", sendEvent);
  $("filter-function").addEventListener("change", refreshRuns);
  $("filter-status").addEventListener("change", refreshRuns);
  $("filter-since").addEventListener("change", refreshRuns);
  $("more-runs").addEventListener("click", () => {
    state.limit = Math.min(state.limit + state.about.page_size, MAX_RUNS);
    refreshRuns();
  });
  $("cancel-run").addEventListener("click", cancelRun);
  $("dlq-show").addEventListener("click", () => showDeadLetters().catch((err) => message($("dlq-result"), err.message, false)));
  $("dlq-redrive-all").addEventListener("click", () => redrive());
  $("cancel-matching").addEventListener("click", () => bulkAction("cancel"));
  $("replay-matching").addEventListener("click", () => bulkAction("replay"));
  $("rerun-run").addEventListener("click", () => rerunRun());
  $("invoke-run-fn").addEventListener("click", invokeRunFunction);
  $("invoke-form").addEventListener("submit", invokeFunction);
  $("close-invoke").addEventListener("click", closeInvoke);
  $("close-run").addEventListener("click", () => { location.hash = ""; });
  $("close-event").addEventListener("click", () => { location.hash = ""; });
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); findById($("search").value); });
  window.addEventListener("hashchange", route);
  $("key-form").addEventListener("submit", createKey);
  $("key-copy").addEventListener("click", copyKey);
  $("key-dismiss").addEventListener("click", forgetKey);
  // Moving on clears a key shown once: a page kept in the back-forward cache would come back with it.
  window.addEventListener("hashchange", forgetKey);
  window.addEventListener("pagehide", forgetKey);
  loadAbout().then(() => {
    // Not while the tab is hidden: over a deployed app each refresh costs read units.
    setInterval(() => { if ($("auto-refresh").checked && !document.hidden) refreshAll(); },
      state.about.refresh_seconds * 1000);
    loadFunctions().catch((err) => { $("functions").replaceChildren(h("li", { class: "muted" }, err.message)); });
    refreshEvents().catch(() => {}).then(refreshRuns).then(route);
    refreshDeadLetters().catch(() => {});
    refreshKeys();
  });
}

start();
