// The Buttermilk batch dashboard: reads /api once a second and redraws.
// Two views on one page: "/" lists batches, "/batches/{id}" shows one batch.
"use strict";

const TOKEN_KEY = "buttermilk.api.token";
const POLL_MS = 1000;
const PAGE_SIZE = 20;
const JOB_PAGE_SIZE = 25;
const ENDED = new Set(["completed", "failed", "cancelled"]);

const $ = (id) => document.getElementById(id);

class NeedsToken extends Error {}

// -- API ---------------------------------------------------------------------------

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) {
    showTokenForm(Boolean(sessionStorage.getItem(TOKEN_KEY)));
    throw new NeedsToken();
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : "";
    const error = new Error(message || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// -- small helpers -----------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function rate(value) {
  if (value === null || value === undefined) return "–";
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(2)}/s`;
}

function eta(batch) {
  if (ENDED.has(batch.status)) return "–";
  return batch.eta_seconds === null ? "…" : duration(batch.eta_seconds);
}

function usd(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1 ? `$${value.toFixed(2)}` : `$${value.toFixed(4)}`;
}

function when(timestamp) {
  return timestamp === null || timestamp === undefined
    ? "–"
    : new Date(timestamp * 1000).toLocaleString();
}

function statusBadge(status, id) {
  return el("span", { class: `status status-${status}`, id }, status);
}

function percent(part, total) {
  return total ? `${((100 * part) / total).toFixed(2)}%` : "0%";
}

// completed / failed / cancelled segments; running and pending make up the rest.
function progressBar(batch) {
  const attrs = { "data-batch": batch.batch_id };
  return drawBar(batch.counts, batch.total, `batch ${batch.batch_id}`, attrs,
    ENDED.has(batch.status));
}

// One combination's bar: the same segments over its own jobs.
function combinationBar(combination, batch) {
  return drawBar(combination.counts, combination.total, `combination ${combination.variant}`,
    { "data-variant": combination.variant }, ENDED.has(batch.status));
}

// ``name`` labels it for screen readers; ``attrs`` find it (data-batch, data-variant).
function drawBar(c, total, name, attrs, endedBatch) {
  const ended = c.completed + c.failed + c.cancelled;
  const remaining = c.pending + c.running;
  const meter = el(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": total,
      "aria-valuenow": ended,
      "aria-label": `${name}: ${ended} of ${total} jobs ended`,
      title: `${c.completed} completed, ${c.failed} failed, ${c.cancelled} cancelled, ` +
        `${c.running} running, ${c.pending} pending`,
      ...attrs,
    },
    el("span", { class: "seg completed", style: { width: percent(c.completed, total) } }),
    el("span", { class: "seg failed", style: { width: percent(c.failed, total) } }),
    el("span", { class: "seg cancelled", style: { width: percent(c.cancelled, total) } }),
    el("span", { class: "seg running", style: { width: percent(c.running, total) } }),
  );
  const label = el(
    "span",
    { class: "bar-label" },
    `${ended} / ${total}`,
    remaining && !endedBatch ? ` · ${remaining} left` : "",
  );
  return [meter, label];
}

// An axis value as its combination's key shows it: text as is, the rest as JSON.
function axisValue(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

// Combinations x repeats, short ("6×3"); nothing for a batch without axes or repeats.
function grid(batch) {
  return batch.combination_count > 1 || batch.repeats > 1
    ? `${batch.combination_count}×${batch.repeats}`
    : "";
}

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function setLive(ok) {
  $("live").classList.toggle("stale", !ok);
  $("live").textContent = ok ? "live" : "offline";
}

// -- views ------------------------------------------------------------------------

function route() {
  const match = location.pathname.match(/^\/batches\/([^/]+)\/?$/);
  return match ? { view: "batch", id: decodeURIComponent(match[1]) } : { view: "list" };
}

function showView(name) {
  for (const view of ["token-view", "list-view", "batch-view"]) $(view).hidden = view !== name;
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

const list = { offset: 0, status: "", flow: "", flowsLoaded: false };

async function loadFlows() {
  if (list.flowsLoaded) return;
  const flows = await api("/api/flows");
  const select = $("filter-flow");
  for (const flow of flows) select.append(el("option", { value: flow.name }, flow.name));
  list.flowsLoaded = true;
}

function batchRow(batch) {
  const href = `/batches/${encodeURIComponent(batch.batch_id)}`;
  return el(
    "tr",
    { "data-batch": batch.batch_id },
    el("td", {}, el("a", { href, class: "batch-link" }, el("code", {}, batch.batch_id))),
    el("td", {}, batch.flow,
      grid(batch) ? el("span", { class: "muted grid-size", title: "combinations × repeats" },
        ` ${grid(batch)}`) : null),
    el("td", {}, statusBadge(batch.status)),
    el("td", { class: "progress" }, progressBar(batch)),
    el("td", { class: "num" }, rate(batch.rate)),
    el("td", { class: "num" }, eta(batch)),
    el("td", { class: "num cost" }, usd(batch.cost)),
    el("td", {}, when(batch.created_at)),
  );
}

async function refreshList() {
  await loadFlows();
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset: list.offset });
  if (list.status) query.set("status", list.status);
  if (list.flow) query.set("flow", list.flow);
  const page = await api(`/api/batches?${query}`);
  $("batch-rows").replaceChildren(...page.items.map(batchRow));
  $("no-batches").hidden = page.items.length > 0;
  const last = Math.min(page.offset + page.items.length, page.total);
  $("page-info").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "";
  $("newer").disabled = page.offset === 0;
  $("older").disabled = page.offset + page.limit >= page.total;
}

const batchView = {
  jobStatus: "", jobOrder: "recent", afterSeq: -1, ended: false,
  jobVariant: "", disagrees: false, unstable: false, lastJobs: "", jobsAt: 0,
};

function fact(name, value) {
  return [el("dt", {}, name), el("dd", {}, value)];
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// What asking again for answers that did not fit a schema cost, beside the batch's totals
// (null when no call asked again).
function schemaRetries(batch) {
  const calls = batch.schema_retry_calls || 0;
  if (!calls) return null;
  const cost = batch.schema_retry_cost === null || batch.schema_retry_cost === undefined
    ? ""
    : `, ${usd(batch.schema_retry_cost)} of ${usd(batch.cost)}`;
  return `${plural(calls, "call")}: ${batch.schema_retry_input_tokens} of ` +
    `${batch.input_tokens} in, ${batch.schema_retry_output_tokens} of ` +
    `${batch.output_tokens} out tokens${cost}`;
}

// The LLM endpoints of a live batch, as status shows them: each one workers found down
// (highlighted), and the adaptive level of calls in flight per model and endpoint.
function renderEndpoints(batch) {
  const down = batch.endpoints_down || [];
  const levels = batch.concurrency || [];
  const now = Date.now() / 1000;
  $("endpoints").hidden = down.length === 0 && levels.length === 0;
  $("endpoint-rows").replaceChildren(
    ...down.map((e) =>
      el("li", { class: "down", "data-endpoint": e.endpoint, "data-since": e.since },
        el("code", {}, e.endpoint),
        ` down since ${when(e.since)} (${plural(e.workers, "worker")}): ${e.error}; ` +
          "its jobs wait")),
    ...levels.map((c) =>
      el("li", { class: "level", "data-endpoint": c.endpoint, "data-model": c.model },
        `${c.model} @ `, el("code", {}, c.endpoint),
        `: ${c.level} in flight at most (of ${c.ceiling}, ${plural(c.workers, "worker")})`,
        c.paused_until && c.paused_until > now
          ? `; paused ${(c.paused_until - now).toFixed(1)}s more (Retry-After)`
          : "")),
  );
}

function renderBatch(batch) {
  document.title = `Batch ${batch.batch_id} · Buttermilk`;
  $("batch-id").textContent = batch.batch_id;
  $("batch-status").className = `status status-${batch.status}`;
  $("batch-status").textContent = batch.status;
  $("batch-flow").textContent = `flow ${batch.flow}`;
  $("batch-progress").replaceChildren(...progressBar(batch));
  $("batch-error").textContent = batch.error || "";
  $("batch-error").hidden = !batch.error;
  $("cancel").hidden = ENDED.has(batch.status);
  batchView.ended = ENDED.has(batch.status);
  const request = batch.request;
  const elapsed = batch.started_at === null
    ? null
    : (batch.finished_at || Date.now() / 1000) - batch.started_at;
  $("batch-facts").replaceChildren(
    ...fact("Progress", `${(100 * batch.progress).toFixed(1)}%`),
    ...fact("Rate", rate(batch.rate)),
    ...fact("ETA", eta(batch)),
    ...fact("Cost", usd(batch.cost) +
      (batch.max_cost === null || batch.max_cost === undefined ? "" : ` of ${usd(batch.max_cost)}`)),
    ...fact("Tokens", `${batch.input_tokens ?? 0} in` +
      (batch.cached_input_tokens ? ` (${batch.cached_input_tokens} cached)` : "") +
      `, ${batch.output_tokens ?? 0} out` +
      (batch.reasoning_tokens ? ` (${batch.reasoning_tokens} reasoning)` : "")),
    ...(schemaRetries(batch) ? fact("Schema retries", schemaRetries(batch)) : []),
    ...fact("Elapsed", duration(elapsed)),
    ...fact("Created", when(batch.created_at)),
    ...fact("Started", when(batch.started_at)),
    ...fact("Finished", when(batch.finished_at)),
    ...fact("Concurrency", String(request.concurrency)),
    ...fact("Error policy", request.error_policy),
    ...fact("Parameters", JSON.stringify(request.parameters)),
    ...fact("Combinations", String(batch.combination_count)),
    ...fact("Repeats", String(batch.repeats)),
  );
  renderEndpoints(batch);
  renderCombinations(batch);
  fillVariantFilter(batch);
  $("counts").replaceChildren(
    ...Object.entries(batch.counts).map(([status, count]) =>
      el("div", { class: `count status-${status}`, "data-status": status },
        el("strong", {}, String(count)), el("span", {}, status))),
  );
  const errors = batch.common_errors;
  $("errors").hidden = errors.length === 0;
  $("no-errors").hidden = errors.length > 0;
  $("error-rows").replaceChildren(
    ...errors.map((e) =>
      el("tr", {}, el("td", { class: "num" }, String(e.count)), el("td", {}, e.error_type),
        el("td", {}, e.error_message))),
  );
  const base = `/api/batches/${encodeURIComponent(batch.batch_id)}/results`;
  $("download-jsonl").href = base;
  $("download-csv").href = `${base}?format=csv`;
}

// One row per combination: its key, its value on each axis, its progress and counts.
// Shown when the batch compares (several combinations, or repeats).
function renderCombinations(batch) {
  const combinations = batch.combinations || [];
  const shown = batch.combination_count > 1 || batch.repeats > 1;
  $("combinations").hidden = !shown;
  if (!shown) return;
  const axes = Object.keys(batch.variants);
  $("combination-head").replaceChildren(
    el("tr", {}, el("th", {}, "Variant"), ...axes.map((axis) => el("th", {}, axis)),
      el("th", { class: "wide" }, "Progress"),
      ...["completed", "failed", "running", "pending"].map((s) => el("th", {}, s))),
  );
  $("combination-rows").replaceChildren(
    ...combinations.map((c) =>
      el("tr", { "data-variant": c.variant },
        el("td", {}, el("code", {}, c.variant)),
        ...axes.map((axis) => el("td", { "data-axis": axis },
          axis in c.values ? axisValue(c.values[axis]) : "–")),
        el("td", { class: "progress" }, combinationBar(c, batch)),
        ...["completed", "failed", "running", "pending"].map((s) =>
          el("td", { class: "num", "data-status": s }, String(c.counts[s]))))),
  );
}

// The combination filter lists the batch's combinations (once: they never change).
function fillVariantFilter(batch) {
  const select = $("job-variant");
  const keys = (batch.combinations || []).map((c) => c.variant);
  if (select.dataset.batch === batch.batch_id) return;
  select.dataset.batch = batch.batch_id;
  select.replaceChildren(el("option", { value: "" }, "any"),
    ...keys.map((key) => el("option", { value: key }, key)));
  select.closest("label").hidden = keys.length < 2;
}

// The record id goes in the query, encoded whole: in the path, a browser would rewrite an
// id such as ".." (a dot segment) before sending it. Variant and repeat name which of the
// record's jobs it is.
function jobHref(job) {
  const batch = encodeURIComponent(job.batch_id);
  const query = new URLSearchParams({
    record_id: job.record_id,
    variant: job.variant,
    repeat: job.repeat,
  });
  return `/api/batches/${batch}/job?${query}`;
}

function jobRow(job) {
  const error = job.error_type ? `${job.error_type}: ${job.error_message}` : "";
  const link = el("a", { href: jobHref(job), class: "job-link" }, el("code", {}, job.record_id));
  return el(
    "tr",
    { "data-record": job.record_id, "data-variant": job.variant, "data-repeat": job.repeat },
    el("td", { class: "num" }, String(job.seq + 1)),
    el("td", {}, link),
    el("td", {}, el("code", {}, job.variant)),
    el("td", { class: "num" }, String(job.repeat)),
    el("td", {}, statusBadge(job.status)),
    el("td", { class: "num" }, String(job.attempts)),
    el("td", { class: "num" }, duration(job.duration)),
    el("td", {}, when(job.finished_at)),
    el("td", {}, job.worker || "–"),
    el("td", { class: "error-cell", title: error }, error),
  );
}

async function refreshJobs(batchId) {
  const query = new URLSearchParams({ limit: JOB_PAGE_SIZE });
  if (batchView.jobStatus) query.set("status", batchView.jobStatus);
  if (batchView.jobVariant) query.set("variant", batchView.jobVariant);
  if (batchView.disagrees) query.set("disagrees", "true");
  if (batchView.unstable) query.set("unstable", "true");
  query.set("order", batchView.jobOrder);
  if (batchView.jobOrder === "planned" && batchView.afterSeq >= 0) {
    query.set("after_seq", batchView.afterSeq);
  }
  // The report's filters make the server score the batch: refetch the same filtered page
  // every RESULTS_MS at most while the batch runs, and not at all once it has ended.
  const filtered = batchView.disagrees || batchView.unstable;
  const same = `${batchId}?${query}` === batchView.lastJobs;
  if (filtered && same && (batchView.ended || Date.now() - batchView.jobsAt < RESULTS_MS)) return;
  const page = await api(`/api/batches/${encodeURIComponent(batchId)}/jobs?${query}`);
  batchView.lastJobs = `${batchId}?${query}`;
  batchView.jobsAt = Date.now();
  $("job-rows").replaceChildren(...page.items.map(jobRow));
  const filter = batchView.jobStatus ? `${batchView.jobStatus} ` : "";
  $("jobs-info").textContent = `${page.items.length} shown of ${page.total} ${filter}jobs`;
  $("jobs-first").disabled = batchView.afterSeq < 0;
  $("jobs-next").disabled = page.next_after_seq === null;
  $("jobs-next").dataset.after = page.next_after_seq === null ? "" : page.next_after_seq;
}

async function refreshBatch(batchId) {
  const batch = await api(`/api/batches/${encodeURIComponent(batchId)}`);
  renderBatch(batch);
  await refreshResults(batch);
  await refreshJobs(batch.batch_id);
}

// -- polling ----------------------------------------------------------------------

let timer = null;
let ticking = false;

async function tick() {
  clearTimeout(timer);
  if (ticking) return;
  ticking = true;
  const where = route();
  try {
    if (!document.hidden) {
      if (where.view === "batch") await refreshBatch(where.id);
      else await refreshList();
    }
    setLive(true);
    showMessage("");
  } catch (error) {
    ticking = false;
    if (error instanceof NeedsToken) return; // polling resumes once a token is given
    setLive(false);
    showMessage(error.message);
    timer = setTimeout(tick, POLL_MS);
    return;
  }
  ticking = false;
  timer = setTimeout(tick, POLL_MS);
}

function start() {
  const where = route();
  showView(where.view === "batch" ? "batch-view" : "list-view");
  tick();
}

// -- token ------------------------------------------------------------------------

function showTokenForm(rejected) {
  clearTimeout(timer);
  $("token-reason").textContent = rejected
    ? "The server did not accept that token. Enter the right one."
    : "This server needs an API token.";
  showView("token-view");
  $("token-input").value = "";
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  start();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  start();
});

// -- controls ---------------------------------------------------------------------

$("filter-status").addEventListener("change", (event) => {
  list.status = event.target.value;
  list.offset = 0;
  tick();
});

$("filter-flow").addEventListener("change", (event) => {
  list.flow = event.target.value;
  list.offset = 0;
  tick();
});

$("newer").addEventListener("click", () => {
  list.offset = Math.max(0, list.offset - PAGE_SIZE);
  tick();
});

$("older").addEventListener("click", () => {
  list.offset += PAGE_SIZE;
  tick();
});

$("job-status").addEventListener("change", (event) => {
  batchView.jobStatus = event.target.value;
  batchView.afterSeq = -1;
  tick();
});

$("job-variant").addEventListener("change", (event) => {
  batchView.jobVariant = event.target.value;
  batchView.afterSeq = -1;
  tick();
});

for (const name of ["disagrees", "unstable"]) {
  $(`job-${name}`).addEventListener("change", (event) => {
    batchView[name] = event.target.checked;
    batchView.afterSeq = -1;
    tick();
  });
}

$("job-order").addEventListener("change", (event) => {
  batchView.jobOrder = event.target.value;
  batchView.afterSeq = -1;
  tick();
});

$("jobs-first").addEventListener("click", () => {
  batchView.afterSeq = -1;
  tick();
});

$("jobs-next").addEventListener("click", () => {
  const after = $("jobs-next").dataset.after;
  if (after !== "") batchView.afterSeq = Number(after);
  tick();
});

$("cancel").addEventListener("click", async () => {
  const button = $("cancel");
  button.disabled = true;
  try {
    await api(`/api/batches/${encodeURIComponent(route().id)}`, { method: "DELETE" });
    await tick();
  } catch (error) {
    if (!(error instanceof NeedsToken)) showMessage(`Cancel failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
});

// A job link opens the job (record, result, error, traceback) in a dialog, fetched with
// the token when there is one.
$("job-rows").addEventListener("click", async (event) => {
  const link = event.target.closest("a.job-link");
  if (!link) return;
  event.preventDefault();
  try {
    const job = await api(link.getAttribute("href"));
    const which = job.variant === "default" && job.repeat === 0
      ? ""
      : ` (${job.variant}, repeat ${job.repeat})`;
    $("job-title").textContent = job.record_id + which;
    $("job-drawer").replaceChildren(...drawer(job));
    $("job-json").textContent = JSON.stringify(job, null, 2);
    if (!$("job-dialog").open) $("job-dialog").showModal();
  } catch (error) {
    if (!(error instanceof NeedsToken)) showMessage(`Job failed to load: ${error.message}`);
  }
});

$("job-close").addEventListener("click", () => $("job-dialog").close());

// With a token, a plain link cannot send it: fetch the file and hand it over instead.
for (const id of ["download-jsonl", "download-csv"]) {
  $(id).addEventListener("click", async (event) => {
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    event.preventDefault();
    try {
      const link = event.currentTarget;
      const response = await fetch(link.href, { headers: authHeaders() });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const url = URL.createObjectURL(await response.blob());
      const name = id.endsWith("csv") ? "results.csv" : "results.jsonl";
      el("a", { href: url, download: name }).click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      showMessage(`Download failed: ${error.message}`);
    }
  });
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) tick();
});

start();
