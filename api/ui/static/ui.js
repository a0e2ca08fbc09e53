// The pages' behaviour: same-origin JSON calls with the CSRF header, partial refreshes, charts.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const statusLine = document.getElementById("status");

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method, credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { window.location.assign("/ui/login"); }
  if (!response.ok) { throw Object.assign(new Error(data.detail || response.statusText), {status: response.status}); }
  return data;
}

function cell(row, text, tag) {
  const td = document.createElement(tag || "td");
  td.textContent = text;
  if (tag === "th") { td.scope = "row"; }
  row.appendChild(td);
  return td;
}

const fmt = (x, digits) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits === undefined ? 2 : digits));
const numbers = (text) => text.split(",").map((s) => parseInt(s.trim(), 10)).filter((n) => n > 0);
const finished = (state) => ["succeeded", "failed", "cancelled"].includes(state);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Partial refresh: a container with data-refresh is re-rendered by the server every data-every ms.
async function refresh(container) {
  const response = await fetch(container.dataset.refresh, {credentials: "same-origin"});
  if (response.redirected) { window.location.assign(response.url); return; }
  if (response.ok) { container.innerHTML = await response.text(); }
}

function startRefresh(container) {
  const every = parseInt(container.dataset.every, 10) || 2000;
  async function tick() {
    if (!container.contains(document.activeElement)) { await refresh(container); }  // never pull the focus from under the keyboard
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
}

async function pollJob(jobId, onUpdate) {
  for (;;) {
    let job = null;
    try {
      job = await api("GET", `/ui/api/jobs/${encodeURIComponent(jobId)}`);
    } catch (error) {  // a busy store (e.g. while an advisor trains) answers late or 5xx: ask again
      if (error.status && error.status < 500) { throw error; }
    }
    if (job) {
      onUpdate(job);
      if (finished(job.state)) { return job; }
    }
    await sleep(1000);
  }
}

function formJson(form) {
  const data = {};
  for (const [key, value] of new FormData(form)) { data[key] = value; }
  return data;
}

const pages = {};

pages.methods = () => {
  const input = document.getElementById("method-filter");
  const rows = document.querySelectorAll(`#${input.dataset.filterTable} tbody tr`);
  input.addEventListener("input", () => {
    const needle = input.value.toLowerCase();
    rows.forEach((row) => { row.hidden = needle && !row.textContent.toLowerCase().includes(needle); });
  });
};

pages.profiles = () => {
  const data = JSON.parse(document.getElementById("scatter-data").textContent);
  const target = document.getElementById("scatter");
  if (!data.points.length) { target.textContent = "No runs with a quality figure match these filters."; return; }
  const trace = (points, extra) => ({x: points.map((p) => p.speedup), y: points.map((p) => p.quality),
                                     text: points.map((p) => p.label), ...extra});
  window.Plotly.newPlot(target, [
    trace(data.points, {mode: "markers", type: "scatter", name: "runs", marker: {size: 6, opacity: 0.6}}),
    trace(data.front, {mode: "lines+markers", type: "scatter", name: "Pareto front", line: {shape: "hv"}}),
  ], {xaxis: {title: {text: "speed-up (×)"}, type: "log"}, yaxis: {title: {text: "quality change (relative)"}},
      margin: {t: 20}, legend: {orientation: "h"}}, {responsive: true, displaylogo: false});
};

pages.advisor = () => {
  const tables = JSON.parse(document.getElementById("eval-data").textContent);
  const splits = Object.keys(tables);
  if (splits.length) {
    const traces = splits.map((split) => ({type: "bar", name: `${split} split`,
      x: tables[split].map((r) => r.selector), y: tables[split].map((r) => r.gap_closed)}));
    window.Plotly.newPlot("eval-chart", traces, {barmode: "group", yaxis: {title: {text: "gap closed"}},
      margin: {t: 20}, legend: {orientation: "h"}}, {responsive: true, displaylogo: false});
  }
  const button = document.getElementById("retrain");
  button.addEventListener("click", async () => {
    button.disabled = true;
    document.getElementById("train-progress").hidden = false;
    try {
      const job = await api("POST", "/ui/api/advisor/train");
      const done = await pollJob(job.id, (j) => { document.getElementById("train-state").textContent = `${j.id}: ${j.state}`; });
      const bar = document.getElementById("train-bar");
      bar.max = 1; bar.value = 1;
      say(done.state === "succeeded" ? "Training finished: reload to see the new version." : `Training ${done.state}: ${done.errors.join("; ")}`,
          done.state !== "succeeded");
    } catch (error) { say(error.message, true); }
    button.disabled = false;
  });
};

function playgroundRequest(form) {
  const v = formJson(form);
  const body = {model: v.model, workload: {batch_size: +v.batch_size, prompt_len: +v.prompt_len, gen_len: +v.gen_len},
                objective: v.objective, top_k: 100};  // the whole ranking: a playground compares
  if (v.node) { body.node = v.node; }
  if (v.quality_floor !== "") { body.quality_floor = +v.quality_floor; }
  if (v.budget !== "") { body.budget = +v.budget; }
  return {body, prompts: v.prompts.split("\n").filter((p) => p.trim()), genLen: +v.gen_len};
}

async function runCandidate(candidate, request) {
  const section = document.getElementById("run-section");
  section.hidden = false;
  const config = candidate.config || {};
  const run = await api("POST", "/ui/api/runs", {
    model: request.body.model, prompts: request.prompts, max_new_tokens: request.genLen, measure: true,
    node: candidate.node_id, method: config.method ? (config.steps || config) : candidate.method_id});
  document.getElementById("run-id").textContent = `${run.id} (${candidate.method_id} on ${candidate.node_id})`;
  const done = await pollJob(run.id, (job) => {
    const state = document.getElementById("run-state");
    state.textContent = job.state; state.className = `badge ${job.state}`;
  });
  const bar = document.getElementById("run-bar");
  bar.max = 1; bar.value = 1;
  const outputs = document.getElementById("run-outputs");
  outputs.replaceChildren();
  ((done.outputs || {}).texts || []).forEach((text) => {
    const li = document.createElement("li");
    li.appendChild(document.createElement("pre")).textContent = JSON.stringify(text);  // quoted: whitespace shows
    outputs.appendChild(li);
  });
  const body = document.querySelector("#run-figures tbody");
  body.replaceChildren();
  (done.figures || []).forEach((f) => {
    const row = body.insertRow();
    cell(row, f.method_id, "th"); cell(row, f.node_id); cell(row, `${fmt(f.speedup)}×`);
    cell(row, `${fmt(f.latency_p50_s, 4)} s`); cell(row, `${fmt(f.baseline_latency_p50_s, 4)} s`); cell(row, fmt(f.quality_delta, 4));
  });
  say(done.state === "succeeded" ? "The run finished." : `The run ${done.state}: ${(done.errors || []).join("; ")}`, done.state !== "succeeded");
  document.getElementById("run-h").focus();
}

pages.playground = () => {
  const form = document.getElementById("advise-form");
  document.getElementById("run-h").tabIndex = -1;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = playgroundRequest(form);
    const body = document.querySelector("#candidates tbody");
    try {
      const result = await api("POST", "/ui/api/recommendations", request.body);
      body.replaceChildren();
      result.candidates.forEach((c, i) => {
        const row = body.insertRow();
        cell(row, String(i + 1)); cell(row, c.method_id, "th"); cell(row, `${c.node_id} (${c.hardware_class})`);
        cell(row, `${fmt(c.speedup)}× (${fmt(c.speedup_interval[0])}–${fmt(c.speedup_interval[1])})`);
        cell(row, `${fmt(c.quality_delta, 3)} (${fmt(c.quality_interval[0], 3)}–${fmt(c.quality_interval[1], 3)})`);
        cell(row, `${fmt(c.runtime_s, 3)} s · ${fmt(c.cost, 5)}`);
        cell(row, [...c.contributions.map(([f, e]) => `${f} ${e >= 0 ? "+" : ""}${fmt(e)}`), ...c.warnings].join("; "));
        const button = document.createElement("button");
        button.type = "button"; button.textContent = `Run ${c.method_id}`;
        button.disabled = c.node_status !== "online";
        button.addEventListener("click", () => runCandidate(c, request).catch((error) => say(error.message, true)));
        row.insertCell().appendChild(button);
      });
      if (!result.candidates.length) { cell(body.insertRow(), "No candidate passes the constraints.").colSpan = 8; }
      say(`${result.candidates.length} candidates from advisor ${result.advisor_version}; ${result.excluded.length} excluded.`);
    } catch (error) { say(error.message, true); }
  });
};

pages.jobs = () => {
  const form = document.getElementById("grid-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formJson(form);
    const selected = (name) => [...form.elements[name].selectedOptions].map((o) => o.value);
    const workloads = [];
    for (const b of numbers(v.batch_sizes)) {
      for (const p of numbers(v.prompt_lens)) {
        for (const g of numbers(v.gen_lens)) { workloads.push({batch_size: b, prompt_len: p, gen_len: g}); }
      }
    }
    try {
      const job = await api("POST", "/ui/api/profiling-jobs", {models: selected("models"), methods: selected("methods"),
        workloads, reps: +v.reps, pool: form.elements.pool.checked});
      say(`Started ${job.id}: ${job.total} items.`);
      await refresh(document.getElementById("job-list"));
    } catch (error) { say(error.message, true); }
  });
  document.getElementById("job-list").addEventListener("click", async (event) => {
    const id = event.target.dataset.cancel;
    if (!id) { return; }
    try {
      const job = await api("DELETE", `/ui/api/profiling-jobs/${encodeURIComponent(id)}`);
      say(`${job.id} is ${job.state}.`);
      document.getElementById("list-h").focus();  // the button goes away with the refresh
      await refresh(document.getElementById("job-list"));
    } catch (error) { say(error.message, true); }
  });
};

pages.access = () => {
  const show = (secret) => {
    document.getElementById("secret").hidden = false;
    const field = document.getElementById("secret-value");
    field.value = secret; field.focus(); field.select();
  };
  const submit = (formId, path, toBody, secretOf, tableId, label) => {
    const form = document.getElementById(formId);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const created = await api("POST", path, toBody(formJson(form)));
        const row = document.querySelector(`#${tableId} tbody`).insertRow(0);
        cell(row, label(created) || "–", "th"); cell(row, created.id); cell(row, "new: reload for details");
        show(secretOf(created));
      } catch (error) { say(error.message, true); }
    });
  };
  submit("key-form", "/ui/api/keys", (v) => ({name: v.name, scope: v.scope}), (r) => r.key, "keys", (r) => r.name);
  submit("token-form", "/ui/api/join-tokens", (v) => ({note: v.note, ttl_hours: +v.ttl_hours,
    max_uses: v.max_uses ? +v.max_uses : null}), (r) => r.token, "tokens", (r) => r.note);
  document.querySelectorAll("[data-revoke]").forEach((button) => button.addEventListener("click", async () => {
    try {
      await api("DELETE", button.dataset.revoke);
      button.replaceWith(document.createTextNode("revoked"));
      say("Revoked.");
    } catch (error) { say(error.message, true); }
  }));
};

document.querySelectorAll("[data-refresh]").forEach(startRefresh);
const init = pages[document.body.dataset.page];
if (init) { window.addEventListener("DOMContentLoaded", init); }
