// The pages' shared behaviour: same-origin JSON calls with the CSRF header, live partials,
// confirmations, Copy buttons; then the small pages. Bigger pages have their own file.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const statusLine = document.getElementById("status");
const pages = {};

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

function cell(row, text, tag, label) {
  const td = document.createElement(tag || "td");
  td.textContent = text;
  if (tag === "th") { td.scope = "row"; }
  if (label) { td.dataset.label = label; }
  row.appendChild(td);
  return td;
}

const fmt = (x, digits) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits === undefined ? 2 : digits));
const pct = (x) => {
  if (x === null || x === undefined) { return "–"; }
  const text = `${Math.abs(x * 100).toFixed(1)} %`;
  return Number(text.slice(0, -2)) === 0 ? text : `${x > 0 ? "+" : "−"}${text}`;  // no "−0.0 %"
};
// As words.short_id on the server: the kind and the first hex digits, enough to tell ids apart.
function shortId(id) {
  const parts = String(id).split("-");
  if (parts.length < 2) { return id; }
  const tail = parts[parts.length - 1];
  const head = parts.length > 2 || parts[0].length > 6 ? `${parts[0]}-…` : `${parts[0]}-`;
  return head + (tail.length > 8 ? `${tail.slice(0, 8)}…` : tail);
}
const numbers = (text) => text.split(",").map((s) => parseInt(s.trim(), 10)).filter((n) => n > 0);

// Live partials: a container with data-refresh is re-rendered by the server every data-every ms,
// until what it shows says it is finished (an element with data-finished).
async function refresh(container) {
  const response = await fetch(container.dataset.refresh, {credentials: "same-origin"});
  if (response.redirected) { window.location.assign(response.url); return; }
  if (response.ok) {
    container.innerHTML = await response.text();
    container.dispatchEvent(new CustomEvent("refreshed", {bubbles: true}));
  }
}

function startRefresh(container) {
  const every = parseInt(container.dataset.every, 10) || 2000;
  const token = {};
  container.refreshToken = token;  // a container re-pointed elsewhere stops its old loop
  const done = () => container.dataset.untilFinished !== undefined && container.querySelector("[data-finished]");
  async function tick() {
    if (container.refreshToken !== token) { return; }
    if (!container.contains(document.activeElement)) { await refresh(container); }  // never pull the focus from under the keyboard
    if (!done()) { setTimeout(tick, every); }
  }
  if (!done()) { setTimeout(tick, every); }
}

// A confirmation for anything that cannot be undone; resolves true only on the confirm button.
function confirmAction({title, text, warning, confirmLabel}) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const warn = document.getElementById("confirm-warning");
  warn.textContent = warning || "";
  warn.hidden = !warning;
  document.getElementById("confirm-yes").textContent = confirmLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), {once: true});
  });
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {  // no clipboard permission (or not a secure context): the old way
    const field = Object.assign(document.createElement("textarea"), {value: text});
    document.body.appendChild(field);
    field.select();
    document.execCommand("copy");
    field.remove();
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy[data-copy]");
  if (!button) { return; }
  await copyText(button.dataset.copy);
  say(`Copied ${button.dataset.copy}`);
});

let plotly = null;
function loadPlotly() {
  plotly = plotly || new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), {src: "/ui/static/plotly.min.js"});
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", reject);
    document.head.appendChild(script);
  });
  return plotly;
}

function formJson(form) {
  const data = {};
  for (const [key, value] of new FormData(form)) { data[key] = value; }
  return data;
}

async function cancelJob(button) {
  const id = button.dataset.cancel;
  const yes = await confirmAction({title: `Cancel job ${id}?`, confirmLabel: "Cancel the job",
    text: `${button.dataset.label || ""}: items not started yet are dropped; profiles already stored stay.`});
  if (!yes) { return; }
  try {
    const job = await api("DELETE", `/ui/api/profiling-jobs/${encodeURIComponent(id)}`);
    say(`${job.id} is ${job.state}.`);
    const live = button.closest("[data-refresh]");
    if (live) { await refresh(live); }
  } catch (error) { say(error.message, true); }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-cancel]");
  if (button) { cancelJob(button); }
});

pages.methods = () => {
  const input = document.getElementById("method-filter");
  const rows = document.querySelectorAll(`#${input.dataset.filterTable} tbody tr`);
  input.addEventListener("input", () => {
    const needle = input.value.toLowerCase();
    rows.forEach((row) => { row.hidden = needle && !row.textContent.toLowerCase().includes(needle); });
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
};

pages.access = () => {
  const tables = document.getElementById("access-tables");
  const show = (secret, what) => {
    document.getElementById("secret").hidden = false;
    document.getElementById("secret-what").textContent = what;
    document.getElementById("secret-copied").textContent = "";
    const field = document.getElementById("secret-value");
    field.value = secret; field.focus(); field.select();
  };
  document.getElementById("secret-copy").addEventListener("click", async () => {
    await copyText(document.getElementById("secret-value").value);
    document.getElementById("secret-copied").textContent = "Copied to the clipboard.";
  });
  const submit = (formId, path, toBody, secretOf, what) => {
    const form = document.getElementById(formId);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const created = await api("POST", path, toBody(formJson(form)));
        show(secretOf(created), what(created));
        await refresh(tables);  // the new row, complete, without a reload
      } catch (error) { say(error.message, true); }
    });
  };
  submit("key-form", "/ui/api/keys", (v) => ({name: v.name, scope: v.scope}), (r) => r.key,
    (r) => `The ${r.scope} key "${r.name || r.id}".`);
  submit("token-form", "/ui/api/join-tokens", (v) => ({note: v.note, ttl_hours: +v.ttl_hours,
    max_uses: v.max_uses ? +v.max_uses : null}), (r) => r.token, (r) => `The join token "${r.note || r.id}".`);
  tables.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-revoke]");
    if (!button) { return; }
    const mine = button.dataset.mine === "yes";
    const yes = await confirmAction({title: `Revoke ${button.dataset.what}?`, confirmLabel: "Revoke",
      text: "Whoever holds it is refused from now on. This cannot be undone.",
      warning: mine ? "This is the key this browser is logged in with: revoking it logs you out now." : ""});
    if (!yes) { return; }
    try {
      await api("DELETE", button.dataset.revoke);
      if (mine) { window.location.assign("/ui/login"); return; }
      say(`Revoked ${button.dataset.what}.`);
      await refresh(tables);
      document.getElementById("keys-h").focus();  // the button is gone with the refresh
    } catch (error) { say(error.message, true); }
  });
};

document.querySelectorAll("[data-refresh]").forEach(startRefresh);
window.addEventListener("DOMContentLoaded", () => {
  const init = pages[document.body.dataset.page];
  if (init) { init(); }
});
