// The leaderboard: sort by any column, search, pick columns; the view lives in the URL
// (q, sort, dir, cols), so a copied link opens the same table. Then the task's scatter.
"use strict";

const SPEEDUP_TICKS = [0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 32, 64];
const SPARSE_TICKS = [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64];  // a phone's axis has room for few

function boardState() {
  const params = new URLSearchParams(window.location.search);
  const shown = [...document.querySelectorAll('.columns input[name="col"]')].filter((c) => c.checked).map((c) => c.value);
  return {
    q: params.get("q") || "",
    sort: params.get("sort") || "speedup",
    dir: params.get("dir") === "asc" ? "asc" : "desc",
    cols: params.has("cols") ? params.get("cols").split(",").filter(Boolean) : shown,
  };
}

function writeUrl(state) {
  const params = new URLSearchParams(window.location.search);
  params.delete("task");
  for (const [key, value] of [["q", state.q], ["sort", state.sort], ["dir", state.dir], ["cols", state.cols.join(",")]]) {
    if (value) { params.set(key, value); } else { params.delete(key); }
  }
  window.history.replaceState(null, "", `${window.location.pathname}?${params}`);
}

function sortValue(row, column) {
  const cell = row.querySelector(`[data-col="${column}"]`);
  const raw = cell ? cell.dataset.value : "";
  if (raw === "" || raw === undefined) { return null; }
  const value = Number(raw);
  return Number.isNaN(value) ? raw.toLowerCase() : value;
}

function applyBoard(table, state) {
  const body = table.tBodies[0];
  const rows = [...body.rows].filter((r) => r.dataset.search !== undefined);
  const needle = state.q.toLowerCase();
  let shown = 0;
  rows.forEach((row) => {
    row.hidden = Boolean(needle) && !row.dataset.search.toLowerCase().includes(needle);
    shown += row.hidden ? 0 : 1;
  });
  const sign = state.dir === "asc" ? 1 : -1;
  rows.sort((a, b) => {
    const x = sortValue(a, state.sort), y = sortValue(b, state.sort);
    if (x === null || y === null) { return (x === null) - (y === null); }  // empty cells last, either way
    return x < y ? -sign : x > y ? sign : 0;
  }).forEach((row) => body.appendChild(row));
  table.querySelectorAll("thead th[data-col]").forEach((th) => {
    th.setAttribute("aria-sort", th.dataset.col === state.sort ? (state.dir === "asc" ? "ascending" : "descending") : "none");
  });
  const visible = new Set(["method", ...state.cols]);
  table.querySelectorAll("[data-col]").forEach((c) => { c.hidden = !visible.has(c.dataset.col); });
  document.querySelectorAll('.columns input[name="col"]').forEach((c) => { c.checked = visible.has(c.value); });
  document.getElementById("board-empty").hidden = shown > 0 || !rows.length;
  writeUrl(state);
}

function initBoard() {
  const table = document.getElementById("leaderboard");
  document.getElementById("f-task").addEventListener("change", (event) => event.target.form.submit());
  if (!table) { return; }
  const state = boardState();
  const search = document.getElementById("board-search");
  search.value = state.q;
  search.addEventListener("input", () => { state.q = search.value.trim(); applyBoard(table, state); });
  table.querySelector("thead").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-sort]");
    if (!button) { return; }
    const column = button.dataset.sort;
    state.dir = state.sort === column && state.dir === "desc" ? "asc" : "desc";
    state.sort = column;
    applyBoard(table, state);
  });
  document.querySelector(".columns").addEventListener("change", () => {
    state.cols = [...document.querySelectorAll('.columns input[name="col"]')].filter((c) => c.checked).map((c) => c.value);
    applyBoard(table, state);
  });
  document.getElementById("board-link").addEventListener("click", async () => {
    await copyText(window.location.href);
    say("Copied a link to this view: it opens the same task, sort, search and columns.");
  });
  applyBoard(table, state);
}

// Quality changes span −100 % to a few %: the axis shows the bulk, and outliers sit on its edge.
function clippedRange(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
  let low = Math.min(at(0.1), -1), high = Math.max(at(0.9), 1);
  const pad = (high - low) * 0.15;
  low -= pad; high += pad;
  return [Math.max(low, sorted[0] - pad), Math.min(high, sorted[sorted.length - 1] + pad)];
}

function drawScatter() {
  const data = JSON.parse(document.getElementById("scatter-data").textContent);
  const target = document.getElementById("scatter");
  if (!data.points.length) { target.textContent = "No run of this task has a quality figure."; return; }
  const [low, high] = clippedRange(data.points.map((p) => p.quality * 100));
  const trace = (points, extra) => ({
    x: points.map((p) => p.speedup),
    y: points.map((p) => Math.min(high, Math.max(low, p.quality * 100))),
    text: points.map((p) => p.label),
    customdata: points.map((p) => [p.speedup, p.quality * 100]),
    hovertemplate: "%{text}<br>speed-up %{customdata[0]:.2f}×<br>quality change %{customdata[1]:+.1f} %<extra></extra>",
    type: "scatter", ...extra});
  const clipped = (p) => p.quality * 100 < low || p.quality * 100 > high;
  const inside = data.points.filter((p) => !clipped(p)), outside = data.points.filter(clipped);
  const xs = data.points.map((p) => p.speedup);
  const ticks = (target.clientWidth < 700 ? SPARSE_TICKS : SPEEDUP_TICKS).filter((t) => t >= Math.min(...xs) / 1.3 && t <= Math.max(...xs) * 1.3);
  window.Plotly.newPlot(target, [
    trace(inside, {mode: "markers", name: "runs", marker: {size: 8, opacity: 0.7}}),
    trace(outside, {mode: "markers", name: "beyond the axis (value in the hover)",
      marker: {size: 11, symbol: outside.map((p) => (p.quality * 100 < low ? "triangle-down" : "triangle-up"))}}),
    trace(data.front, {mode: "lines+markers", name: "Pareto front (speed-up ≥ 1×)", line: {shape: "hv"}}),
  ], {
    xaxis: {title: {text: "speed-up (× the baseline, log scale)"}, type: "log", tickvals: ticks,
      ticktext: ticks.map((t) => `${t}×`)},
    yaxis: {title: {text: "quality change (%; below 0 is worse)"}, range: [low, high], ticksuffix: " %", zeroline: true},
    shapes: [{type: "line", xref: "x", yref: "paper", x0: 1, x1: 1, y0: 0, y1: 1, line: {dash: "dot", width: 1}}],
    margin: {t: 40}, legend: {orientation: "h", x: 0, y: 1.12, yanchor: "bottom"},
  }, {responsive: true, displaylogo: false});
  performance.mark("scatter-ready");
}

pages.profiles = () => {
  initBoard();
  performance.mark("leaderboard-ready");
  document.body.dataset.ready = "leaderboard";
  loadPlotly().then(drawScatter);  // 3.5 MB of chart code: after the table, never before it
};
