// The Models page: register a model (a folder under the model root, or a config.json read here
// and posted as JSON), then its zero-shot advice on the family's default workload and "Profile it",
// which queues the job that turns the advice into measurements.
"use strict";

// API refusals go to the page's alert region (announced at once); successes to the status line.
function alarm(text) { document.getElementById("models-alert").textContent = text; }

async function registerBody(form) {
  const v = formJson(form);
  if (v.source === "path") { return {path: v.path}; }
  const file = form.elements.config_file.files[0];
  let config;
  try {
    config = JSON.parse(await file.text());
  } catch (error) {  // refused here: the API would only say that the body is not JSON
    throw new Error(`${file.name} is not valid JSON (${error.message})`);
  }
  return v.name.trim() ? {config, name: v.name.trim()} : {config};
}

function chooseSource(form) {
  const source = form.elements.source.value;
  for (const [id, mode] of [["from-path", "path"], ["from-config", "config"]]) {
    const fieldset = document.getElementById(id);
    fieldset.hidden = source !== mode;
    fieldset.disabled = source !== mode;  // a hidden mode's fields are neither sent nor required
  }
}

function adviceRow(body, c, rank) {
  const row = body.insertRow();
  row.dataset.method = c.method_id;
  cell(row, String(rank), "td", "Rank");
  cell(row, c.method_id, "th", "Method");
  cell(row, `${fmt(c.speedup)}× (${fmt(c.speedup_interval[0])}–${fmt(c.speedup_interval[1])})`, "td", "Speed-up");
  cell(row, `${pct(c.quality_delta)} (${pct(c.quality_interval[0])} to ${pct(c.quality_interval[1])})`, "td", "Quality");
  const basis = cell(row, "", "td", "Basis");
  basis.dataset.basis = c.basis;
  const words = document.createElement("span");
  words.append(Object.assign(document.createElement("span"), {className: "badge", textContent: c.basis}),
    Object.assign(document.createElement("span"), {className: "sub", textContent: c.basis_words}));
  basis.appendChild(words);
  cell(row, `${shortId(c.node_id)} (${c.hardware_class}, ${c.node_status})`, "td", "Node");
  cell(row, [...(c.reasons || []), ...c.warnings].join("; ") || "–", "td", "Why");
}

async function showAdvice(modelId, name) {
  const advice = await api("GET", `/ui/api/models/${encodeURIComponent(modelId)}/advice`);
  const section = document.getElementById("advice");
  section.hidden = false;
  section.dataset.model = modelId;
  document.getElementById("advice-model").textContent = name;
  document.getElementById("zero-shot").hidden = !advice.zero_shot;
  document.getElementById("advice-task").textContent = `Latency on its family's default workload (${advice.workload_words}), `
    + `from advisor ${shortId(advice.advisor_version)}, best first; ${advice.excluded.length} candidates excluded.`;
  const body = document.querySelector("#advice-candidates tbody");
  body.replaceChildren();
  advice.candidates.forEach((c, i) => adviceRow(body, c, i + 1));
  if (!advice.candidates.length) { cell(body.insertRow(), "No candidate for this model.").colSpan = 7; }
  const sure = advice.make_sure;
  const box = document.getElementById("make-sure");
  box.hidden = sure === null;  // a config.json alone has no weights; measured candidates need no job
  document.getElementById("profile-job").hidden = true;
  const button = document.getElementById("profile-it");
  button.disabled = false;
  if (sure) {
    document.getElementById("make-sure-what").textContent = `Profile it: measures ${sure.measures.join(", ")} on `
      + `${sure.hardware_classes.join(", ")}; when the job finishes the advisor retrains, and the answer for them `
      + "is the measurement.";
    button.onclick = () => profile(modelId, sure.body).catch((error) => { button.disabled = false; alarm(error.message); });
  }
  document.getElementById("advice-h").focus();
}

async function profile(modelId, body) {
  const button = document.getElementById("profile-it");
  button.disabled = true;  // one job per click: a second would measure the same again
  alarm("");
  const job = await api("POST", `/ui/api/models/${encodeURIComponent(modelId)}/profile`, body);
  const link = document.getElementById("profile-job-link");
  link.href = `/ui/jobs/${encodeURIComponent(job.id)}`;
  link.textContent = `job ${shortId(job.id)}`;
  link.title = job.id;
  document.getElementById("profile-job-what").textContent = `${job.total} items, ${job.state}`;
  document.getElementById("profile-job").hidden = false;
  say(`Started ${job.id}: ${job.total} items.`);
}

pages.models = () => {
  const form = document.getElementById("register-form");
  const list = document.getElementById("model-list");
  form.elements.source.forEach((radio) => radio.addEventListener("change", () => chooseSource(form)));
  chooseSource(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await api("POST", "/ui/api/models", await registerBody(form));
      alarm("");
      say(`Registered ${made.id}.`);
      await refresh(list);
      const row = [...list.querySelectorAll("button[data-advice]")].find((b) => b.dataset.advice === made.id);
      await showAdvice(made.id, row ? row.dataset.name : made.id);
    } catch (error) { alarm(error.message); }
  });
  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-advice]");
    if (!button) { return; }
    alarm("");
    showAdvice(button.dataset.advice, button.dataset.name).catch((error) => alarm(error.message));
  });
};
