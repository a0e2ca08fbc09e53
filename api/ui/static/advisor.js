// The advisor pages: the gap-closed chart on a clipped scale, retraining with its live stages,
// and activating or rolling back a version (after a confirmation).
"use strict";

const GAP_FLOOR = -1;  // below "as bad as the single best method, again": clipped and labelled

function drawEvaluation() {
  const {tables, splits} = JSON.parse(document.getElementById("eval-data").textContent);
  const names = Object.keys(tables);
  if (!names.length) { return; }
  const all = names.flatMap((s) => tables[s].map((r) => r.gap_closed)).filter((v) => v !== undefined && v !== null);
  const floor = Math.min(...all) < GAP_FLOOR ? GAP_FLOOR : Math.min(0, ...all) - 0.1;
  const traces = names.map((split) => {
    const rows = tables[split].filter((r) => r.gap_closed !== undefined && r.gap_closed !== null);
    return {
      type: "bar", name: `held out: ${splits[split]}`,
      x: rows.map((r) => r.name), y: rows.map((r) => Math.max(r.gap_closed, floor)),
      customdata: rows.map((r) => r.gap_closed),
      text: rows.map((r) => (r.gap_closed < floor ? `${r.gap_closed.toFixed(2)} ↓` : "")), textposition: "inside",
      hovertemplate: "%{x}<br>gap closed %{customdata:.2f}<extra>%{fullData.name}</extra>",
    };
  });
  window.Plotly.newPlot("eval-chart", traces, {
    barmode: "group",
    yaxis: {title: {text: "gap closed"}, range: [floor - 0.05, 1.1], zeroline: true},
    annotations: floor === GAP_FLOOR ? [{xref: "paper", yref: "y", x: 0, y: floor, xanchor: "left", yanchor: "bottom",
      text: "bars ending here go further down (value on the bar)", showarrow: false, font: {size: 11}}] : [],
    margin: {t: 20, b: 120}, legend: {orientation: "h", y: 1.1},
  }, {responsive: true, displaylogo: false});
}

function watchTraining(button) {
  const box = document.getElementById("training-box");
  let seen = Boolean(box.querySelector("[data-training]"));
  box.addEventListener("refreshed", async () => {
    const running = box.querySelector("[data-training]");
    button.disabled = Boolean(running);
    if (running) { seen = running.dataset.training; return; }
    if (!seen) { return; }
    const id = typeof seen === "string" ? seen : null;
    seen = false;
    if (!id) { say("Training finished: reload to see the new version."); return; }
    const job = await api("GET", `/ui/api/jobs/${encodeURIComponent(id)}`);
    if (job.state !== "succeeded") { say(`Training ${job.state}: ${(job.errors || []).join("; ")}`, true); return; }
    const made = shortId(job.advisor_version);
    say(job.activated ? `Training finished: ${made} is the active advisor now. Reload to see it.`
      : `Training finished: ${made} was kept inactive (${job.gate}). Reload to compare or activate it.`);
  });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const force = document.getElementById("retrain-force").checked;
      const job = await api("POST", `/ui/api/advisor/train${force ? "?force=true" : ""}`);
      seen = job.id;
      say(`Training ${shortId(job.id)} started.`);
      await refresh(box);
    } catch (error) { say(error.message, true); button.disabled = false; }
  });
}

async function activate(button) {
  const number = button.dataset.number;
  const rollBack = button.dataset.rollback !== undefined || button.textContent.startsWith("Roll back");
  const yes = await confirmAction({
    title: `${rollBack ? "Roll back to" : "Activate"} v${number}?`, confirmLabel: `${rollBack ? "Roll back to" : "Activate"} v${number}`,
    text: "Every recommendation and every \"auto\" run uses the active version from now on. You can switch back at any time.",
    warning: button.dataset.worse ? `v${number} scored lower than the active version on a held-out split.` : "",
  });
  if (!yes) { return; }
  try {
    const path = button.dataset.rollback !== undefined ? "/ui/api/advisor/rollback"
      : `/ui/api/advisor/versions/${encodeURIComponent(button.dataset.activate)}/activate`;
    await api("POST", path);
    say(`v${number} is the active advisor now.`);
    window.location.reload();
  } catch (error) { say(error.message, true); }
}

// Cross-validates both versions on the profiles stored now; the page shows the kept result.
async function scorePair(button) {
  button.disabled = true;
  say("Scoring both versions on the same folds…");
  try {
    const path = `/ui/api/advisor/versions/${encodeURIComponent(button.dataset.newer)}/compare/${encodeURIComponent(button.dataset.older)}`;
    const result = await api("POST", path);
    say(`Scored on ${result.n_tasks} tasks: ${result.not_worse ? "not worse" : "worse"}.`);
    window.location.reload();
  } catch (error) { say(error.message, true); button.disabled = false; }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-activate], button[data-rollback]");
  if (button) { activate(button); }
  if (event.target.closest("#score-pair")) { scorePair(event.target.closest("#score-pair")); }
});

pages.advisor = () => {
  watchTraining(document.getElementById("retrain"));
  loadPlotly().then(drawEvaluation);
};
