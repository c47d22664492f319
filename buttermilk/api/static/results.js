// The Buttermilk batch dashboard's results: a batch's report drawn as charts (plotly.js,
// figures built by the API) and tables, and a job's drawer. Loaded before app.js, whose
// helpers (el, fact, api, $, ...) these functions call when they run.
"use strict";

// -- results: the report's charts and figures, and a job's drawer ------------------

const RESULTS_MS = 5000; // a running batch's report is recomputed at most this often
const results = { batchId: null, at: 0, ended: -1, done: false };

function fixed(value, digits = 3) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function interval(value) {
  if (!value || value.estimate === null) return "–";
  if (value.low === null || value.high === null) return fixed(value.estimate);
  return `${fixed(value.estimate)} [${fixed(value.low)}, ${fixed(value.high)}]`;
}

// The report is fetched again when jobs have ended since, every RESULTS_MS at most while
// the batch runs, and once more when it ends; then never (its figures are final).
async function refreshResults(batch) {
  if (results.batchId !== batch.batch_id) {
    Object.assign(results, { batchId: batch.batch_id, at: 0, ended: -1, done: false });
  }
  const c = batch.counts;
  const ended = c.completed + c.failed + c.cancelled;
  const finished = ENDED.has(batch.status);
  if (results.done || ended === results.ended) return;
  if (!finished && Date.now() - results.at < RESULTS_MS) return;
  results.at = Date.now();
  try {
    const view = await api(`/api/batches/${encodeURIComponent(batch.batch_id)}/report/charts`);
    drawResults(view);
  } catch (error) {
    if (error instanceof NeedsToken || error.status !== 422) throw error;
    noResults(error.message); // nothing declared to score: say so, keep the rest
    results.done = true; // what the batch declares does not change: never ask again
    return;
  }
  results.ended = ended;
  results.done = finished;
}

// "5 (3 failed, 2 no label)": jobs not scored, by reason (as the CLI and the HTML report).
function missingText(m) {
  const total = m.not_finished + m.failed + m.no_label + m.no_truth;
  const parts = [["not finished", m.not_finished], ["failed", m.failed],
    ["no label", m.no_label], ["no truth", m.no_truth]]
    .filter(([, n]) => n).map(([name, n]) => `${n} ${name}`);
  return parts.length ? `${total} (${parts.join(", ")})` : "0";
}

function noResults(message) {
  $("results-note").textContent = `No scores: ${message}`;
  $("charts").replaceChildren();
  $("score-table").hidden = true;
  $("agreement").hidden = true;
  for (const id of ["job-disagrees", "job-unstable"]) $(id).disabled = true;
}

function drawResults(view) {
  const report = view.report;
  const spec = report.evaluate;
  $("results-note").textContent = (report.live
    ? `Live: scores over the ${report.finished} of ${report.jobs} jobs finished so far. `
    : `${report.finished} of ${report.jobs} jobs finished. `) +
    `Label ${spec.label} against ${spec.truth} (${spec.kind}).` +
    (report.notes || []).map((note) => ` Note: ${note}.`).join("");
  for (const id of ["job-disagrees", "job-unstable"]) $(id).disabled = false;
  drawCharts(view.charts, view.config);
  drawScores(report);
  drawAgreement(report);
}

// One div per chart (by its id), drawn by plotly.js from the figure the API built.
function drawCharts(charts, config) {
  const box = $("charts");
  if (typeof Plotly === "undefined") {
    box.replaceChildren(el("p", { class: "error" }, "plotly.js did not load: no charts."));
    return;
  }
  const divs = charts.map((chart) => {
    const div = box.querySelector(`[data-chart="${chart.id}"]`) ||
      el("div", { class: "chart", id: `chart-${chart.id}`, "data-chart": chart.id });
    div.setAttribute("aria-label", chart.title);
    return div;
  });
  box.replaceChildren(...divs);
  charts.forEach((chart, i) => Plotly.react(divs[i], chart.figure.data, chart.figure.layout, config));
}

function drawScores(report) {
  const intervalKind = report.evaluate.kind === "interval";
  const axes = [...new Set(report.combinations.flatMap((s) => Object.keys(s.axes)))];
  const several = report.batch_ids.length > 1;
  const positive = !intervalKind && positiveClass(report) !== null;
  const named = positive ? ` (${axisValue(positiveClass(report))})` : "";
  const figures = intervalKind
    ? ["MAE (95% CI)", "RMSE", "Pearson r (95% CI)", "Spearman ρ (95% CI)"]
    : ["Accuracy (95% CI)", "Macro-F1", "Cohen's κ",
      ...(positive ? [`Precision${named}`, `Recall${named}`, `F1${named}`] : [])];
  $("score-head").replaceChildren(el("tr", {},
    ...(several ? [el("th", {}, "Batch")] : []),
    el("th", {}, "Combination"), ...axes.map((a) => el("th", {}, a)),
    ...["Jobs", "Scored", "Missing", ...figures, "Stability"].map((h) => el("th", {}, h))));
  const scores = [...report.combinations, report.overall];
  if (report.agreement && report.agreement.majority) scores.push(report.agreement.majority);
  $("score-rows").replaceChildren(...scores.map((s) => {
    const p = s.positive;
    const cells = intervalKind
      ? [s.mae_interval ? interval(s.mae_interval) : fixed(s.mae), fixed(s.rmse),
        interval(s.pearson), interval(s.spearman)]
      : [interval(s.accuracy), fixed(s.macro_f1), fixed(s.cohen_kappa),
        ...(positive ? [fixed(p?.precision), fixed(p?.recall), fixed(p?.f1)] : [])];
    return el("tr", { "data-variant": s.variant, "data-batch": s.batch_id },
      ...(several ? [el("td", {}, el("code", {}, s.batch_id || "all"))] : []),
      el("td", {}, el("code", {}, s.variant)),
      ...axes.map((a) => el("td", {}, a in s.axes ? axisValue(s.axes[a]) : "")),
      el("td", { class: "num" }, String(s.jobs)),
      el("td", { class: "num" }, String(s.scored)),
      el("td", { class: "num missing" }, missingText(s.missing)),
      ...cells.map((text, i) => el("td", {
        class: i === 0 ? "num figure" : "num",
        "data-value": i === 0 ? JSON.stringify(intervalKind ? s.mae : s.accuracy?.estimate ?? null)
          : null,
      }, text)),
      el("td", { class: "num" }, fixed(s.stability)));
  }));
  $("score-table").hidden = false;
}

function positiveClass(report) {
  const value = report.evaluate.positive;
  return value === undefined ? null : value;
}

function drawAgreement(report) {
  const a = report.agreement;
  const items = [];
  if (a) {
    items.push(...fact("Raters (combinations × repeats)", String(a.raters)),
      ...fact("Records", String(a.records)),
      ...fact(`Krippendorff's α (${report.evaluate.kind})`, fixed(a.krippendorff_alpha)),
      ...fact("Fleiss' κ", fixed(a.fleiss_kappa)),
      ...fact("Mean stability", fixed(a.stability)),
      ...(a.notes || []).flatMap((note) => fact("Note", note)));
  }
  for (const c of report.comparisons) {
    items.push(...fact(`${c.a} − ${c.b} (McNemar)`,
      `${interval(c.difference)}, p = ${fixed(c.p_value, 4)} on ${c.records} records`));
  }
  $("agreement").replaceChildren(...items);
  $("agreement").hidden = items.length === 0;
}

// An image a record holds: a data: URI, an http(s) URL of an image file, or bytes
// (buttermilk.values' {"$bytes": base64}) whose first bytes say PNG, JPEG, GIF or WebP.
const MAGIC = { iVBORw0KGgo: "png", "/9j/": "jpeg", R0lGOD: "gif", UklGR: "webp" };

function imageSource(value) {
  if (typeof value === "string") {
    if (/^data:image\/[\w.+-]+[;,]/i.test(value)) return value;
    if (/^https?:\/\/\S+\.(png|jpe?g|gif|webp|svg)(\?\S*)?$/i.test(value)) return value;
    return null;
  }
  if (value && typeof value === "object" && typeof value.$bytes === "string") {
    const kind = Object.entries(MAGIC).find(([head]) => value.$bytes.startsWith(head));
    return kind ? `data:image/${kind[1]};base64,${value.$bytes}` : null;
  }
  return null;
}

function recordImages(record) {
  const found = [];
  const look = (name, value) => {
    const src = imageSource(value);
    if (src) found.push(el("figure", {}, el("img", { src, alt: name }), el("figcaption", {}, name)));
  };
  look("content", record.content);
  look("uri", record.uri);
  for (const [key, value] of Object.entries(record.metadata || {})) look(key, value);
  return found;
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function section(title, attrs, ...children) {
  return el("section", attrs, el("h3", {}, title), ...children);
}

function dl(pairs) {
  return el("dl", { class: "facts" },
    ...pairs.filter(([, v]) => v !== undefined).flatMap(([k, v]) => fact(k, v)));
}

// What an agent's output holds of an LLM call: its request (when the agent kept it) and
// its raw answer, model, tokens and cost (buttermilk.agents.llm's output fields).
function agentSection(name, output) {
  const parts = [];
  if (output && typeof output === "object" && !Array.isArray(output)) {
    const usage = output.usage || {};
    const facts = [];
    if (output.model !== undefined) facts.push(["Model", String(output.model)]);
    if (usage.input_tokens !== undefined) {
      facts.push(["Tokens", `${usage.input_tokens} in, ${usage.output_tokens} out`]);
    }
    if (output.cost !== undefined) facts.push(["Cost", usd(output.cost)]);
    if (output.attempts !== undefined) facts.push(["Calls", String(output.attempts)]);
    if (output.cached !== undefined) facts.push(["Cached", String(output.cached)]);
    if (facts.length) parts.push(dl(facts));
    const request = output.request ?? output.messages ?? output.prompt;
    if (request !== undefined) {
      parts.push(el("h4", {}, "LLM request"), el("pre", { class: "llm-request" }, pretty(request)));
    }
    if (output.raw !== undefined) {
      parts.push(el("h4", {}, "Raw answer"), el("pre", { class: "llm-raw" }, pretty(output.raw)));
    }
  }
  parts.push(el("h4", {}, "Output"), el("pre", { class: "output" }, pretty(output)));
  return section(`Agent ${name}`, { class: "agent", "data-agent": name }, ...parts);
}

// The job's drawer: its record, every agent's output, what it spent, and its error.
function drawer(job) {
  const record = job.record || {};
  const result = job.result || {};
  const parts = [
    section("Record", { class: "record" },
      dl([["Record id", job.record_id], ["URI", record.uri ?? undefined],
        ["Ground truth", pretty(record.ground_truth ?? null)]]),
      ...recordImages(record),
      el("h4", {}, "Content"), el("pre", { class: "content" }, pretty(record.content ?? null)),
      el("h4", {}, "Metadata"), el("pre", { class: "metadata" }, pretty(record.metadata || {}))),
  ];
  for (const [name, output] of Object.entries(result.outputs || {})) {
    parts.push(agentSection(name, output));
  }
  parts.push(section("Run", { class: "run" }, dl([
    ["Status", job.status], ["Attempts", String(job.attempts)],
    ["Combination", `${job.variant}, repeat ${job.repeat}`],
    ["Worker", job.worker || "–"], ["Duration", duration(job.duration)],
    ["Tokens", `${job.input_tokens ?? 0} in, ${job.output_tokens ?? 0} out`],
    ["Cost", usd(job.cost)],
    ["Timings", result.timings ? JSON.stringify(result.timings) : "–"],
  ])));
  if (job.error_type || job.error_message) {
    parts.push(section("Error", { class: "error" },
      el("p", {}, `${job.error_type || "Error"}: ${job.error_message || ""}`),
      job.traceback ? el("pre", { class: "traceback" }, job.traceback) : null));
  }
  return parts;
}
