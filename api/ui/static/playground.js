// The playground: a task and constraints → the advisor's ranked candidates → "Run" one, then
// follow it live (stages, outputs, measured beside predicted) in the run's own partial.
"use strict";

function playgroundRequest(form) {
  const v = formJson(form);
  const body = {model: v.model, workload: {batch_size: +v.batch_size, prompt_len: +v.prompt_len, gen_len: +v.gen_len},
                objective: v.objective, top_k: 100};  // the whole ranking: a playground compares
  if (v.node) { body.node = v.node; }
  if (v.quality_floor !== "") { body.quality_floor = +v.quality_floor; }
  if (v.budget !== "") { body.budget = +v.budget; }
  return {body, prompts: v.prompts.split("\n").filter((p) => p.trim()), genLen: +v.gen_len};
}

function costWords(c) {
  const runtime = c.runtime_s === null || c.runtime_s === undefined ? "–" : `${fmt(c.runtime_s, 3)} s`;
  if (c.cost === null || c.cost === undefined) { return runtime; }
  return `${runtime} · ${c.cost > 0 ? `${Number(c.cost).toPrecision(3)} per run` : "no price set for this node"}`;
}

function configWords(config) {
  const params = (config && config.params) || {};
  return Object.entries(params).map(([k, v]) => `${k} ${v}`).join(", ");
}

async function runCandidate(candidate, request) {
  const config = candidate.config || {};
  const run = await api("POST", "/ui/api/runs", {
    model: request.body.model, prompts: request.prompts, max_new_tokens: request.genLen, measure: true,
    node: candidate.node_id, method: config.method ? (config.steps || config) : candidate.method_id});
  const section = document.getElementById("run-section");
  section.hidden = false;
  document.getElementById("run-link").href = `/ui/runs/${encodeURIComponent(run.id)}`;
  const body = document.getElementById("run-body");
  body.dataset.refresh = `/ui/partials/runs/${encodeURIComponent(run.id)}`;
  await refresh(body);
  startRefresh(body);
  document.querySelector("#candidates").closest(".scroll").scrollLeft = 0;
  document.getElementById("run-h").focus();
  section.scrollIntoView({block: "start"});
  say(`Run ${shortId(run.id)} of ${candidate.method_id} started on ${shortId(candidate.node_id)}.`);
}

function candidateRow(body, c, rank, tied, request) {
  const row = body.insertRow();
  cell(row, tied ? `${rank} =` : String(rank), "td", "Rank");
  const method = cell(row, c.method_id, "th", "Method");
  const params = configWords(c.config);
  if (params) { method.appendChild(Object.assign(document.createElement("span"), {className: "sub", textContent: params})); }
  cell(row, `${fmt(c.speedup)}× (${fmt(c.speedup_interval[0])}–${fmt(c.speedup_interval[1])})`, "td", "Speed-up");
  cell(row, `${pct(c.quality_delta)} (${pct(c.quality_interval[0])} to ${pct(c.quality_interval[1])})`, "td", "Quality");
  const button = document.createElement("button");
  button.type = "button"; button.textContent = `Run ${c.method_id}`;
  button.disabled = c.node_status !== "online";
  button.addEventListener("click", () => runCandidate(c, request).catch((error) => say(error.message, true)));
  const runCell = row.insertCell();
  runCell.dataset.label = "Run";
  runCell.appendChild(button);
  cell(row, `${c.node_id} (${c.hardware_class})`, "td", "Node");
  cell(row, costWords(c), "td", "Runtime · cost");
  cell(row, [...(c.reasons || []), ...c.warnings].join("; ") || "–", "td", "Why");
}

pages.playground = () => {
  const form = document.getElementById("advise-form");
  const runBody = document.getElementById("run-body");
  runBody.addEventListener("refreshed", () => {
    const state = runBody.querySelector("[data-finished]");
    if (state) {
      const done = state.dataset.state;
      say(done === "succeeded" ? "The run finished." : `The run ${done}.`, done !== "succeeded");
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = playgroundRequest(form);
    const body = document.querySelector("#candidates tbody");
    try {
      const result = await api("POST", "/ui/api/recommendations", request.body);
      body.replaceChildren();
      let rank = 0, previous = null;
      result.candidates.forEach((c, i) => {
        const key = `${fmt(c.speedup)}|${fmt(c.quality_delta, 3)}`;
        const tied = key === previous;
        rank = tied ? rank : i + 1;  // competition ranking: 1, 2, 2 =, 4
        previous = key;
        candidateRow(body, c, rank, tied, request);
      });
      if (!result.candidates.length) { cell(body.insertRow(), "No candidate passes the constraints.").colSpan = 8; }
      say(`${result.candidates.length} candidates from advisor ${shortId(result.advisor_version)}; `
        + `${result.excluded.length} excluded.`);
    } catch (error) { say(error.message, true); }
  });
};
