// dicomnode admin page: a small single-page app over the node's own /api.
//
// No framework and no build step: the page must work offline and be readable by whoever
// is on call. Every value from the API goes into the page as text (textContent), never
// as HTML, and the Content-Security-Policy forbids inline script, so data cannot run.

const TOKEN_KEY = "dicomnode.token"; // sessionStorage: gone when the tab closes
const ACTOR_KEY = "dicomnode.actor"; // localStorage: the name written to the audit log
const REFRESH_MS = 10000;

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const login = document.getElementById("login");
let refreshTimer = null;
let renderCount = 0;

// ---------------------------------------------------------------- helpers

/** Build an element: h("td", {class: "num"}, "3"). Strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(text, kind) {
  return h("span", { class: `badge ${kind || text}` }, text);
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return h("time", { datetime: iso, title: iso }, text);
}

function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
}

function short(text, length = 12) {
  if (!text) return "—";
  return text.length > length ? `${text.slice(0, length)}…` : text;
}

function table(headers, rows, emptyText = "None.") {
  if (!rows.length) return h("p", { class: "empty" }, emptyText);
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((text) =>
      h("th", { class: text.endsWith("#") ? "num" : null }, text.replace(/#$/, ""))))),
    h("tbody", {}, rows));
}

function panel(title, ...children) {
  return h("section", { class: "panel" }, title ? h("h2", {}, title) : null, ...children);
}

function say(text, kind = "ok") {
  notice.textContent = text;
  notice.className = `notice ${kind}`;
  notice.hidden = false;
}

function quiet() {
  notice.hidden = true;
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, body) {
    super(typeof body?.detail === "string" ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** Call the admin API with the token and the audit actor; JSON in, JSON out. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const actor = localStorage.getItem(ACTOR_KEY);
  headers["X-Actor"] = actor ? `web: ${actor}` : "web";
  // Every change is JSON, even without a body: the node refuses any other type of change
  // (a form or text/plain POST is what another site could make the browser send).
  if (method !== "GET") headers["Content-Type"] = "application/json";
  // Relative to /ui/, so the page also works behind a reverse proxy under a prefix.
  const url = new URL(`../api/${path}`, document.baseURI);
  const response = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text }; }
  }
  // 401: no token, or a wrong one. 403 is a valid token whose role may not do this: the
  // error says so where the action was tried, and the token stays.
  if (response.status === 401) askForToken(Boolean(token));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function askForToken(wrong) {
  login.hidden = false;
  say(wrong ? "The token was not accepted." : "Sign in with one of the node's tokens (admin or viewer).", "bad");
  document.getElementById("token").focus();
}

login.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  login.hidden = true;
  quiet();
  route();
});

const actorInput = document.getElementById("actor");
actorInput.value = localStorage.getItem(ACTOR_KEY) || "";
actorInput.addEventListener("change", () => {
  localStorage.setItem(ACTOR_KEY, actorInput.value.trim());
});

// ---------------------------------------------------------------- shared pieces

function jobLink(job) {
  return h("a", { href: `#/jobs/${job.id}` }, job.id);
}

function seriesLink(uid, text) {
  if (!uid) return "—";
  return h("a", { href: `#/series/${encodeURIComponent(uid)}`, title: uid }, text || short(uid, 28));
}

function jobWhat(job) {
  if (job.kind !== "pipeline") return `send to ${job.destination}`;
  return `${job.pipeline} (rule ${job.rule})${job.shadow ? " [shadow]" : ""}`;
}

function jobProblem(job) {
  return job.kind === "pipeline" ? job.error : job.reason;
}

async function retry(job, button) {
  button.disabled = true;
  try {
    const after = await api(`jobs/${job.id}/retry`, { method: "POST" });
    say(`${job.id} requeued: it is ${after.state} now.`);
    await route();
  } catch (error) {
    button.disabled = false;
    say(`Retry of ${job.id} refused: ${error.message}`, "bad");
  }
}

function retryButton(job) {
  if (job.state !== "failed") return null;
  const button = h("button", { class: "retry", "data-job": job.id }, "Retry");
  button.addEventListener("click", () => retry(job, button));
  return button;
}

function jobsTable(jobs, emptyText) {
  return table(["job", "what", "series", "state", "attempts#", "created", "problem", ""],
    jobs.map((job) => h("tr", { "data-job": job.id },
      h("td", {}, jobLink(job)),
      h("td", {}, jobWhat(job)),
      h("td", {}, seriesLink(job.series_uid)),
      h("td", {}, badge(job.state)),
      h("td", { class: "num" }, job.attempts),
      h("td", {}, when(job.created_at)),
      h("td", { class: "error-text" }, jobProblem(job) || ""),
      h("td", {}, retryButton(job)))), emptyText);
}

// A routing failure shows as a badge with its reason beside it (retrying, or failed).
function routingCell(state, error) {
  if (!state) return "—";
  if (state === "failed" || state === "retrying") {
    return h("span", { class: "routing", "data-routing": state },
      badge(state, state === "failed" ? "failed" : "warn"), " ",
      h("span", { class: "error-text" }, error || ""));
  }
  return badge(state);
}

// Instances withdrawn by an IOCM rejection note (docs/routing.md): no pipeline runs on them.
function rejectedBadge(count) {
  return count ? [" ", h("span", { "data-rejected": count }, badge(`${count} rejected`, "warn"))] : null;
}

async function retryRouting(uid, button) {
  button.disabled = true;
  try {
    const after = await api(`series/${encodeURIComponent(uid)}/retry-routing`, { method: "POST" });
    say(`Routing of ${short(uid, 28)} requeued (${after.requeued} version(s)).`);
    await route();
  } catch (error) {
    button.disabled = false;
    say(`Retry of routing refused: ${error.message}`, "bad");
  }
}

// Routing again (docs/routing.md): the latest version, by the rules in force now.
async function reroute(uid, button) {
  button.disabled = true;
  try {
    const after = await api(`series/${encodeURIComponent(uid)}/reroute`, { method: "POST" });
    say(`Version ${after.version} of ${short(uid, 28)} queued to be routed again (rules ${short(after.rules_version)}).`);
    await route();
  } catch (error) {
    button.disabled = false;
    say(`Routing again refused: ${error.message}`, "bad");
  }
}

function seriesTable(series, emptyText) {
  return table(["series", "modality", "description", "images#", "version#", "state", "routing", "origin", "last arrival"],
    series.map((item) => h("tr", { "data-series": item.series_uid },
      h("td", {}, seriesLink(item.series_uid)),
      h("td", {}, item.modality || "—"),
      h("td", {}, item.description || "—"),
      h("td", { class: "num" }, item.instance_count),
      h("td", { class: "num" }, item.version),
      h("td", {}, badge(item.state), rejectedBadge(item.rejected_count)),
      h("td", {}, routingCell(item.routing_state, item.routing_error)),
      h("td", {}, item.origin),
      h("td", {}, when(item.last_arrival_at)))), emptyText);
}

function counts(title, byState, order) {
  const states = [...new Set([...order, ...Object.keys(byState)])];
  return h("div", {},
    h("h3", {}, title),
    h("div", { class: "counts" }, states.map((state) => h("div", { class: "count", "data-count": `${title}:${state}` },
      h("div", { class: `n ${state === "failed" && byState[state] ? "bad" : ""}` }, byState[state] || 0),
      h("div", { class: "label" }, state)))));
}

// ---------------------------------------------------------------- pages

async function dashboard() {
  const [overview, failed, series, jobs, destinations, nodes] = await Promise.all([
    api("overview"),
    api("jobs?state=failed&limit=50"),
    api("series?limit=15"),
    api("jobs?limit=15"),
    api("destinations?echo=false"),
    api("cluster"),
  ]);
  const node = overview.node;
  const status = h("section", { class: "panel", id: "node-status" },
    h("div", { class: "row" },
      h("h2", {}, `${node.ae_title}`),
      overview.readiness.ready ? badge("ready", "ok") : badge("not ready", "bad")),
    h("dl", { class: "facts" },
      h("dt", {}, "DICOM port"), h("dd", {}, node.dicom_port ?? "—"),
      h("dt", {}, "version"), h("dd", {}, node.version),
      h("dt", {}, "running since"), h("dd", {}, when(node.started_at), ` (${ago(node.started_at)})`),
      h("dt", {}, "rules in force"), h("dd", {}, h("a", { href: "#/rules" },
        `${overview.rules_count} rule${overview.rules_count === 1 ? "" : "s"}, version ${short(overview.rules_version)}`)),
      ...overview.readiness.checks.flatMap((check) => [
        h("dt", {}, check.name),
        h("dd", {}, badge(check.ok ? "ok" : "failing", check.ok ? "ok" : "bad"), " ", check.detail || ""),
      ])),
    overview.rules_last_rejection
      ? h("p", { class: "error-text" }, `Last rules edit on disk was refused: ${overview.rules_last_rejection}`)
      : null);

  const countsPanel = panel("Work",
    counts("series", overview.series, ["receiving", "complete"]),
    counts("pipeline jobs", overview.pipeline_jobs, ["pending", "running", "failed", "done"]),
    counts("sends", overview.sends, ["pending", "sending", "failed", "done"]));

  const destinationRows = destinations.map((d) => h("tr", { "data-destination": d.name },
    h("td", {}, d.name),
    h("td", { class: "mono" }, d.kind === "dicomweb" ? d.url : `${d.ae_title}@${d.host}:${d.port}`),
    h("td", { class: "num" }, d.pending),
    h("td", { class: "num" }, d.failed ? h("span", { class: "error-text" }, d.failed) : 0),
    h("td", {}, d.oldest_pending_at ? ago(d.oldest_pending_at) : "—"),
    h("td", { class: "echo" }, "—")));
  const echoButton = h("button", { class: "secondary" }, "C-ECHO all");
  const destinationsPanel = h("section", { class: "panel", id: "destinations" },
    h("div", { class: "row" }, h("h2", {}, "Destinations"), h("span", { class: "spacer" }), echoButton),
    table(["name", "address", "waiting#", "failed#", "oldest waiting", "C-ECHO"], destinationRows,
      "No destinations configured."));
  echoButton.addEventListener("click", async () => {
    echoButton.disabled = true;
    destinationsPanel.querySelectorAll("td.echo").forEach((cell) => { cell.textContent = "checking…"; });
    try {
      const checked = await api("destinations?echo=true");
      for (const d of checked) {
        const cell = destinationsPanel.querySelector(`tr[data-destination="${CSS.escape(d.name)}"] td.echo`);
        if (!cell) continue;
        cell.textContent = "";
        cell.append(d.echo && d.echo.ok
          ? badge(`ok, ${Math.round(d.echo.ms)} ms`, "ok")
          : badge(d.echo?.error || "failed", "bad"));
      }
    } catch (error) {
      destinationsPanel.querySelectorAll("td.echo").forEach((cell) => { cell.textContent = "—"; });
      say(`C-ECHO refused: ${error.message}`, "bad");
    } finally {
      echoButton.disabled = false;
    }
  });

  const stateBadge = { up: "ok", lost: "bad", stopped: "" };
  const nodeRows = nodes.map((n) => h("tr", { "data-node": n.id },
    h("td", { class: "mono" }, n.id, n.this_node ? " (this node)" : ""),
    h("td", {}, n.host),
    h("td", {}, n.roles.join(", ")),
    h("td", {}, n.version),
    h("td", {}, ago(n.heartbeat_at)),
    h("td", {}, badge(n.state, stateBadge[n.state] ?? "")),
    h("td", { class: "num" }, `${n.leases.sends ?? 0} / ${n.leases.jobs ?? 0} / ${n.leases.routing ?? 0}`)));
  const clusterPanel = h("section", { class: "panel", id: "cluster" },
    h("h2", {}, `Cluster (${nodes.filter((n) => n.state === "up").length} up)`),
    table(["node", "host", "roles", "version", "heartbeat", "state", "holds sends / jobs / routing"],
      nodeRows, "No node has joined yet."));

  return [
    h("h1", {}, "Dashboard"),
    h("div", { class: "grid" }, status, countsPanel),
    clusterPanel,
    h("section", { class: "panel", id: "attention" },
      h("h2", {}, `Needs attention${failed.length ? ` (${failed.length})` : ""}`),
      jobsTable(failed, "Nothing has failed.")),
    destinationsPanel,
    h("section", { class: "panel", id: "recent-series" }, h("h2", {}, "Recent series"),
      seriesTable(series, "No series received yet.")),
    h("section", { class: "panel", id: "recent-jobs" }, h("h2", {}, "Recent jobs"),
      jobsTable(jobs, "No jobs yet.")),
  ];
}

async function seriesList(params) {
  const state = params.get("state") || "";
  const modality = params.get("modality") || "";
  const query = new URLSearchParams({ limit: "200" });
  if (state) query.set("state", state);
  if (modality) query.set("modality", modality);
  const series = await api(`series?${query}`);
  const stateSelect = h("select", { name: "state" },
    ["", "receiving", "complete"].map((s) => h("option", { value: s, selected: s === state }, s || "any state")));
  const modalityInput = h("input", { name: "modality", value: modality, placeholder: "modality, e.g. CT", size: 14 });
  const form = h("form", { class: "row" }, stateSelect, modalityInput, h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (stateSelect.value) next.set("state", stateSelect.value);
    if (modalityInput.value.trim()) next.set("modality", modalityInput.value.trim().toUpperCase());
    location.hash = `#/series?${next}`;
  });
  return [h("h1", {}, "Series"), panel(null, form), panel(null, seriesTable(series, "No series match."))];
}

async function seriesView(uid) {
  const detail = await api(`series/${encodeURIComponent(uid)}`);
  const s = detail.series;
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "series UID"), h("dd", { class: "mono" }, s.series_uid),
    h("dt", {}, "study UID"), h("dd", { class: "mono" }, s.study_uid),
    h("dt", {}, "modality"), h("dd", {}, s.modality || "—"),
    h("dt", {}, "description"), h("dd", {}, s.description || "—"),
    h("dt", {}, "body part"), h("dd", {}, s.body_part || "—"),
    h("dt", {}, "images"), h("dd", {}, s.instance_count),
    h("dt", {}, "version"), h("dd", {}, s.version),
    h("dt", {}, "state"), h("dd", {}, badge(s.state), rejectedBadge(s.rejected_count)),
    h("dt", {}, "origin"), h("dd", {}, s.origin === "result" ? "a result written by a pipeline" : "received"),
    h("dt", {}, "first / last arrival"), h("dd", {}, when(s.first_arrival_at), " / ", when(s.last_arrival_at)),
    h("dt", {}, "completes at"), h("dd", {}, s.state === "receiving" ? when(s.deadline_at) : "—"));
  const completions = table(["version#", "images#", "reason", "completed", "routed", "routing", "tries#"],
    detail.completions.map((c) => h("tr", { "data-completion": c.version },
      h("td", { class: "num" }, c.version), h("td", { class: "num" }, c.instance_count),
      h("td", {}, c.reason), h("td", {}, when(c.completed_at)), h("td", {}, when(c.consumed_at)),
      h("td", {}, routingCell(c.routing_state, c.routing_error)),
      h("td", { class: "num" }, c.routing_failures))),
    "Not complete yet.");
  let routingRetry = null;
  if (detail.completions.some((c) => c.routing_state === "failed" || c.routing_state === "retrying")) {
    routingRetry = h("button", { class: "retry", id: "retry-routing" }, "Retry routing");
    routingRetry.addEventListener("click", () => retryRouting(s.series_uid, routingRetry));
  }
  let routeAgain = null;
  const latest = detail.completions[detail.completions.length - 1];
  if (s.state === "complete" && latest && latest.routing_state === "routed") {
    routeAgain = h("button", { id: "reroute", title: "Route the latest version again by the rules in force now" }, "Route again");
    routeAgain.addEventListener("click", () => reroute(s.series_uid, routeAgain));
  }
  const decisions = table(["version#", "decided", "rules version", "matched", "forward to", "pipelines"],
    detail.decisions.map((d) => h("tr", {},
      h("td", { class: "num" }, d.version),
      h("td", {}, when(d.decided_at), d.rerouted ? [" ", h("span", { "data-rerouted": "" }, badge(`re-routed by ${d.rerouted_by}`))] : null),
      h("td", { class: "mono", title: d.rules_version }, short(d.rules_version)),
      h("td", {}, d.unrouted ? badge("unrouted", "warn") : d.matched_rules.join(", ")),
      h("td", {}, d.forward_to.join(", ") || "—"),
      h("td", {}, d.pipeline_runs.map((r) => `${r.pipeline} → ${r.send_to.join(", ") || "—"}`).join("; ") || "—"))),
    "Not routed yet.");
  const shown = detail.instances.slice(0, 50);
  const instances = table(["#", "SOP instance UID", "transfer syntax", "bytes#", "version#"],
    shown.map((i, n) => h("tr", {},
      h("td", {}, n + 1), h("td", { class: "mono" }, i.sop_instance_uid),
      h("td", { class: "mono" }, i.transfer_syntax_uid), h("td", { class: "num" }, i.size.toLocaleString()),
      h("td", { class: "num" }, i.series_version))));
  return [
    h("h1", {}, `Series ${s.modality || ""} ${s.description || ""}`.trim()),
    h("div", { class: "grid" }, panel("Series", facts), panel("Completion", completions, routingRetry)),
    panel("Routing decisions", decisions, routeAgain),
    h("section", { class: "panel", id: "series-jobs" }, h("h2", {}, "Jobs and sends"), jobsTable(detail.jobs, "No jobs.")),
    panel(`Instances (${detail.instances.length}${detail.instances.length > shown.length ? `, first ${shown.length} shown` : ""})`, instances),
  ];
}

async function jobsList(params) {
  const kind = params.get("kind") || "";
  const state = params.get("state") || "";
  const query = new URLSearchParams({ limit: "200" });
  if (kind) query.set("kind", kind);
  if (state) query.set("state", state);
  const jobs = await api(`jobs?${query}`);
  const kindSelect = h("select", { name: "kind" },
    ["", "pipeline", "send"].map((k) => h("option", { value: k, selected: k === kind }, k || "any kind")));
  const stateSelect = h("select", { name: "state" },
    ["", "pending", "running", "sending", "done", "failed"].map((s) =>
      h("option", { value: s, selected: s === state }, s || "any state")));
  const form = h("form", { class: "row" }, kindSelect, stateSelect, h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (kindSelect.value) next.set("kind", kindSelect.value);
    if (stateSelect.value) next.set("state", stateSelect.value);
    location.hash = `#/jobs?${next}`;
  });
  return [h("h1", {}, "Jobs"), panel(null, form), panel(null, jobsTable(jobs, "No jobs match."))];
}

async function jobView(id) {
  const { job, timeline: t } = await api(`jobs/${encodeURIComponent(id)}`);
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "what"), h("dd", {}, jobWhat(job)),
    h("dt", {}, "series"), h("dd", {}, seriesLink(job.series_uid, job.series_uid), ` (version ${job.series_version})`),
    h("dt", {}, "state"), h("dd", { id: "job-state" }, badge(job.state)),
    h("dt", {}, "attempts"), h("dd", {}, job.attempts),
    job.kind === "send" ? [h("dt", {}, "instances sent"), h("dd", {}, `${job.sent_count} of ${job.instance_count}`)] : null,
    job.kind === "send" && job.commitment ? [h("dt", {}, "storage commitment"), h("dd", { id: "job-commitment" }, badge(job.commitment))] : null,
    job.kind === "send" ? [h("dt", {}, "origin"), h("dd", {}, job.origin)] : null,
    job.kind === "pipeline" && !job.shadow ? [h("dt", {}, "results go to"), h("dd", {}, job.send_to.join(", ") || "—")] : null,
    job.shadow ? [h("dt", {}, "shadow"), h("dd", { id: "job-shadow" }, badge("shadow", "warn"),
      ` results kept, nothing sent; would go to ${job.send_to.join(", ") || "—"}`)] : null,
    jobProblem(job) ? [h("dt", {}, "problem"), h("dd", { class: "error-text", id: "job-problem" }, jobProblem(job))] : null);
  const retry = retryButton(job);

  const steps = [];
  if (t.received) steps.push(["received", t.received.last_at, `${t.received.instance_count} images, first ${when(t.received.first_at).textContent}`]);
  if (t.completed) steps.push(["completed", t.completed.at, `by ${t.completed.reason}`]);
  if (t.routed) steps.push(["routed", t.routed.at, `rules ${short(t.routed.rules_version)}: ${t.routed.matched_rules.join(", ") || "no rule"}`]);
  steps.push(["queued", t.queued_at, ""]);
  if (t.started_at) steps.push(["started", t.started_at, ""]);
  if (t.finished_at) steps.push(["finished", t.finished_at, t.seconds !== null ? `${seconds(t.seconds)} in all` : ""]);
  const events = table(["event", "at", ""], steps.map(([name, at, text]) =>
    h("tr", { "data-event": name }, h("td", {}, name), h("td", {}, when(at)), h("td", {}, text))));

  const longest = Math.max(0.001, ...t.stages.map((s) => s.seconds));
  const stages = table(["stage", "seconds#", ""], t.stages.map((s) => h("tr", { "data-stage": s.stage },
    h("td", {}, s.stage, s.failed ? [" ", badge("failed here", "bad")] : null),
    h("td", { class: "num" }, s.seconds.toFixed(3)),
    h("td", { style: null }, h("div", { class: "bar", "data-width": s.seconds / longest })))),
    job.kind === "pipeline" ? "No stage has run yet." : "Sends have no pipeline stages.");
  // widths set from script (the CSP forbids inline style attributes)
  stages.querySelectorAll?.(".bar").forEach((bar) => { bar.style.width = `${Math.round(Number(bar.dataset.width) * 100)}%`; });

  const sends = t.sends.map((send) => h("div", { class: "send", "data-send": send.id },
    h("h3", {}, h("a", { href: `#/jobs/${send.id}` }, send.id), ` → ${send.destination} `, badge(send.state)),
    table(["attempt", "started", "ended", "outcome", "DIMSE status", "sent#", "detail"],
      send.attempts.map((a, n) => h("tr", { "data-attempt": n + 1 },
        h("td", {}, n + 1), h("td", {}, when(a.started_at)), h("td", {}, when(a.ended_at)),
        h("td", {}, badge(a.outcome)),
        h("td", { class: "mono" }, a.status_hex ? `${a.status_hex} ${a.status_name || ""}` : "—"),
        h("td", { class: "num" }, a.sent), h("td", {}, a.detail))),
      "No attempt yet.")));
  const results = table(["modality", "series"], t.results.map((r) =>
    h("tr", {}, h("td", {}, r.modality), h("td", {}, seriesLink(r.series_uid)))), "No results.");

  return [
    h("div", { class: "row" }, h("h1", {}, `Job ${job.id}`), h("span", { class: "spacer" }), retry),
    h("div", { class: "grid" }, panel("Job", facts), h("section", { class: "panel", id: "timeline" }, h("h2", {}, "Timeline"), events)),
    job.kind === "pipeline" ? h("section", { class: "panel", id: "stages" }, h("h2", {}, "Pipeline stages"), stages) : null,
    job.kind === "pipeline" ? panel("Results", results) : null,
    t.envelope ? envelopePanel(t.envelope) : null,
    t.summary ? panel("Summary", h("pre", { class: "block" }, JSON.stringify(t.summary, null, 2))) : null,
    h("section", { class: "panel", id: "sends" }, h("h2", {}, "Sends and their attempts"),
      sends.length ? sends : h("p", { class: "empty" }, "No sends.")),
  ];
}

// A series outside the model's input envelope: skipped (not run) or flagged (run).
function envelopePanel(e) {
  const scanner = e.scanner || {};
  const what = e.action === "flag" ? "ran, flagged: outside the inputs the model was validated on"
    : "not run: outside the inputs the model was validated on";
  return h("section", { class: "panel", id: "envelope" }, h("h2", {}, "Input envelope"),
    h("p", {}, badge(e.action === "flag" ? "flagged" : "skipped", e.action === "flag" ? "warn" : "bad"), ` model ${e.model}: ${what}`),
    h("ul", {}, (e.outside || []).map((reason) => h("li", {}, reason))),
    h("p", { class: "empty" }, `scanner: ${[scanner.manufacturer, scanner.model, scanner.station].filter(Boolean).join(" / ") || "unknown"}`));
}

// ------------------------------------------------------------ the rules editor

async function rulesPage(params) {
  const [rules, series] = await Promise.all([api("rules"), api("series?limit=200")]);
  const fileNames = rules.files.map((f) => f.name);
  let name = params.get("file") || fileNames[0] || "rules.yaml";
  const original = rules.files.find((f) => f.name === name)?.content ?? "";
  const isNew = !fileNames.includes(name);

  const textarea = h("textarea", { id: "rule-text", spellcheck: "false", "aria-label": `contents of ${name}` });
  textarea.value = original;
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const status = h("div", { class: "check-status", id: "check-status" }, "");
  const problemList = h("ul", { class: "problems", id: "problems" });
  const saveButton = h("button", { id: "save", disabled: true }, "Save");
  const dryRunButton = h("button", { class: "secondary", id: "dry-run" }, "Dry run");
  const seriesSelect = h("select", { id: "dry-run-series" },
    series.length ? series.map((s) => h("option", { value: s.series_uid },
      `${s.modality || "?"} ${s.description || ""} — ${s.instance_count} images — ${short(s.series_uid, 24)}`))
      : h("option", { value: "" }, "no stored series"));
  const dryRunOut = h("div", { id: "dry-run-result" });
  let problemLines = new Set();
  let valid = false;
  let checkSerial = 0;

  function paintGutter() {
    const count = textarea.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: count }, (_, i) =>
      h("div", { class: problemLines.has(i + 1) ? "problem" : null }, i + 1)));
    gutter.scrollTop = textarea.scrollTop;
  }

  function goToLine(line) {
    const lines = textarea.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + (lines[line - 1] || "").length);
    textarea.scrollTop = Math.max(0, (line - 5) * 19);
  }

  function showProblems(problems) {
    problemLines = new Set(problems.filter((p) => p.file === name && p.line).map((p) => p.line));
    problemList.replaceChildren(...problems.map((p) => {
      const where = `${p.file}${p.line ? `:${p.line}` : ""}${p.key ? `: ${p.key}` : ""}`;
      const item = h("li", { "data-line": p.line || "" }, h("code", {}, where), ` — ${p.message}`);
      if (p.line && p.file === name) item.addEventListener("click", () => goToLine(p.line));
      return item;
    }));
    paintGutter();
  }

  async function check() {
    const serial = ++checkSerial;
    status.className = "check-status";
    status.textContent = "checking…";
    try {
      const result = await api("rules/check", { method: "POST", body: { name, content: textarea.value } });
      if (serial !== checkSerial) return;
      valid = true;
      status.className = "check-status ok";
      status.textContent = `Valid: ${result.rules} rule${result.rules === 1 ? "" : "s"} in all, version ${short(result.version)} once saved.`;
      showProblems([]);
    } catch (error) {
      if (serial !== checkSerial) return;
      valid = false;
      status.className = "check-status bad";
      const problems = error.body?.problems || [];
      status.textContent = problems.length
        ? `${problems.length} problem${problems.length === 1 ? "" : "s"}: not saved until fixed.`
        : `Cannot check: ${error.message}`;
      showProblems(problems);
    }
    saveButton.disabled = !valid || textarea.value === original && !isNew;
  }

  let pending = null;
  textarea.addEventListener("input", () => {
    paintGutter();
    saveButton.disabled = true;
    clearTimeout(pending);
    pending = setTimeout(check, 350);
  });
  textarea.addEventListener("scroll", () => { gutter.scrollTop = textarea.scrollTop; });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Tab") { // YAML wants spaces
      event.preventDefault();
      textarea.setRangeText("  ", textarea.selectionStart, textarea.selectionEnd, "end");
      textarea.dispatchEvent(new Event("input"));
    }
  });

  dryRunButton.addEventListener("click", async () => {
    if (!seriesSelect.value) { say("There is no stored series to try the rules on.", "bad"); return; }
    dryRunButton.disabled = true;
    dryRunOut.replaceChildren(h("p", { class: "empty" }, "running…"));
    try {
      const result = await api("rules/dry-run", {
        method: "POST", body: { name, content: textarea.value, series_uid: seriesSelect.value },
      });
      const d = result.decision;
      dryRunOut.replaceChildren(
        h("p", { id: "dry-run-decision" }, d.routed
          ? `Would route: rules ${d.matched_rules.join(", ")}; forward to ${d.forward_to.join(", ") || "nowhere"}; ` +
            `pipelines ${d.pipeline_runs.map((r) => `${r.pipeline} → ${r.send_to.join(", ")}`).join("; ") || "none"}.`
          : "No rule matches: the series would be recorded as unrouted."),
        table(["rule", "where", "outcome", "why not"], result.verdicts.map((v) => h("tr", { "data-rule": v.rule },
          h("td", {}, v.rule), h("td", { class: "mono" }, `${v.file}:${v.line ?? "?"}`),
          h("td", {}, badge(v.outcome, v.outcome === "matched" ? "ok" : "warn")),
          h("td", {}, v.reason || (v.stopped_by ? `stopped by ${v.stopped_by}` : ""))))),
        h("details", {}, h("summary", {}, "Full explanation"), h("pre", { class: "block" }, result.explain)));
    } catch (error) {
      const problems = error.body?.problems || [];
      if (problems.length) showProblems(problems);
      dryRunOut.replaceChildren(h("p", { class: "error-text" }, `Dry run refused: ${error.message}`));
    } finally {
      dryRunButton.disabled = false;
    }
  });

  saveButton.addEventListener("click", async () => {
    saveButton.disabled = true;
    try {
      const saved = await api("rules", {
        method: "PUT", body: { name, content: textarea.value, base_version: rules.version },
      });
      say(`Saved ${saved.name}: rules version ${short(saved.version)}` +
        (saved.in_force ? ", in force now." : ", the node will load it within seconds."));
      await route();
    } catch (error) {
      const problems = error.body?.problems || [];
      if (problems.length) showProblems(problems);
      say(`Not saved: ${error.message}`, "bad");
      saveButton.disabled = false;
    }
  });

  const newName = h("input", { id: "new-file", placeholder: "new-file.yaml", size: 16, pattern: "[A-Za-z0-9][A-Za-z0-9._-]*\\.ya?ml" });
  const newForm = h("form", { class: "row" }, newName, h("button", { class: "secondary", type: "submit" }, "New"));
  newForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = newName.value.trim();
    if (wanted) location.hash = `#/rules?file=${encodeURIComponent(wanted)}`;
  });

  const files = h("nav", { class: "files" },
    fileNames.map((f) => h("a", { href: `#/rules?file=${encodeURIComponent(f)}`, class: f === name ? "current" : null }, f)),
    isNew ? h("a", { class: "current", href: "#" }, `${name} (new)`) : null);

  const inForce = table(["rule", "file", "priority#", "enabled", "stop", "match", "actions"],
    rules.rules.map((r) => h("tr", {},
      h("td", {}, r.name), h("td", { class: "mono" }, `${r.file}:${r.line ?? "?"}`),
      h("td", { class: "num" }, r.priority), h("td", {}, r.enabled ? "yes" : "no"), h("td", {}, r.stop ? "yes" : ""),
      h("td", {}, r.match.map((c) => `${c.keyword} ${c.condition}`).join("; ")),
      h("td", {}, [
        r.pipeline ? `pipeline ${r.pipeline} → ${r.send_to.join(", ")}` : null,
        r.forward_to.length ? `forward to ${r.forward_to.join(", ")}` : null,
      ].filter(Boolean).join("; ")))), "No rules: every series is recorded as unrouted.");
  const history = table(["version", "in force since", "by", "files"], rules.history.map((v) => h("tr", {},
    h("td", { class: "mono", title: v.version }, short(v.version)), h("td", {}, when(v.loaded_at)),
    h("td", {}, v.actor), h("td", {}, v.files.join(", ")))));

  const page = [
    h("h1", {}, "Rules"),
    rules.last_rejection ? h("p", { class: "error-text" }, `The last edit on disk was refused: ${rules.last_rejection}`) : null,
    h("div", { class: "rules-layout" },
      panel("Files", files, newForm),
      h("section", { class: "panel" },
        h("div", { class: "row" }, h("h2", {}, name), h("span", { class: "hint" }, `rules version in force ${short(rules.version)}`)),
        h("div", { class: "editor" }, gutter, textarea),
        status, problemList,
        h("div", { class: "row" }, saveButton, h("span", { class: "spacer" }),
          h("label", {}, "Try on series ", seriesSelect), dryRunButton),
        dryRunOut)),
    panel("Rules in force", inForce),
    panel("History", history),
  ];
  paintGutter();
  check();
  return page;
}

// ------------------------------------------------------------ shadow mode (docs/shadow.md)

function shadowFinding(f) {
  if (f.probability !== null) return `${f.name} ${f.present ? "present" : "absent"} (p=${f.probability.toFixed(2)})`;
  if (f.volume_ml !== null) return `${f.name} ${f.volume_ml.toFixed(1)} ml`;
  return `${f.name} ${f.present ? "present" : "absent"}`;
}

function percent(value) {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)} %`;
}

function shadowReport(report) {
  const rows = table(["finished", "pipeline (rule)", "series", "shadow result", "would send to", "live model", "label"],
    report.rows.map((r) => h("tr", { "data-job": r.job_id },
      h("td", {}, r.finished_at ? when(r.finished_at) : badge(r.state)),
      h("td", {}, h("a", { href: `#/jobs/pipeline-${r.job_id}` }, `${r.pipeline} (${r.rule})`)),
      h("td", {}, seriesLink(r.series_uid)),
      h("td", {}, r.findings.map(shadowFinding).join(", ") || "—"),
      h("td", {}, r.would_send_to.join(", ") || "—"),
      h("td", {}, r.live === null ? "—" : [`${r.live.pipeline}: `, r.live.findings.map((a) =>
        badge(`${a.name} ${a.agree ? "agree" : "disagree"}${a.volume_difference_ml !== null ? ` ${a.volume_difference_ml >= 0 ? "+" : ""}${a.volume_difference_ml.toFixed(1)} ml` : ""}`, a.agree ? "ok" : "bad"))]),
      h("td", {}, r.label === null ? "—" : r.label ? "positive" : "negative"))),
    "No shadow jobs yet: set shadow: true on a rule (docs/shadow.md).");
  const a = report.live_agreement;
  const c = report.confusion;
  const summary = h("p", {}, `Compared with the live model on ${a.compared} series: ${a.agree} agree, ${a.disagree} disagree.`,
    c ? ` Labels: ${c.labelled} labelled (${c.unlabelled} not yet); TP ${c.true_positive}, FP ${c.false_positive}, ` +
      `TN ${c.true_negative}, FN ${c.false_negative}; sensitivity ${percent(c.sensitivity)}, ` +
      `specificity ${percent(c.specificity)}, PPV ${percent(c.ppv)}.` : "");
  return [summary, rows];
}

async function shadowPage() {
  const report = await api("shadow");
  const out = h("div", { id: "shadow-report" }, shadowReport(report));
  const labels = h("textarea", { id: "shadow-labels", spellcheck: "false", rows: 4,
    placeholder: "SeriesInstanceUID,label\n1.2.3...,1", "aria-label": "labels as CSV" });
  const compare = h("button", { type: "button" }, "Compare with these labels");
  compare.addEventListener("click", async () => {
    try {
      const compared = await api("shadow/compare", { method: "POST", body: { labels: labels.value } });
      out.replaceChildren(...shadowReport(compared));
    } catch (error) { say(`Could not compare: ${error.message}`, "bad"); }
  });
  return [
    h("h1", {}, "Shadow mode"),
    panel("Shadow jobs: results kept, nothing sent", out),
    panel("Labels as they arrive", h("p", { class: "hint" },
      "CSV with a SeriesInstanceUID, StudyInstanceUID or AccessionNumber column and a label column (1/0). " +
      "Compared here, never stored."), labels, h("div", { class: "row" }, compare)),
    panel("Ending shadow mode", h("p", {},
      "Run dicomnode shadow end RULE --report report.json (or POST /api/shadow/RULE/end) with the evaluation " +
      "report of the model the pipeline runs now. The change is audited as shadow.end.")),
  ];
}

async function auditPage() {
  const entries = await api("audit?limit=200");
  return [h("h1", {}, "Audit log"), panel(null, table(["at", "who", "action", "target", "detail"],
    entries.map((e) => h("tr", {},
      h("td", {}, when(e.at)), h("td", {}, e.actor), h("td", {}, e.action), h("td", { class: "mono" }, e.target),
      h("td", {}, h("details", {}, h("summary", {}, "show"), h("pre", { class: "block" }, JSON.stringify(e.detail, null, 2)))))),
    "Nothing has been changed through the API or the CLI yet."))];
}

// ---------------------------------------------------------------- routing

const ROUTES = [
  [/^\/?$/, "dashboard", () => dashboard(), true],
  [/^\/series$/, "series", (m, p) => seriesList(p), false],
  [/^\/series\/(.+)$/, "series", (m) => seriesView(decodeURIComponent(m[1])), false],
  [/^\/jobs$/, "jobs", (m, p) => jobsList(p), false],
  [/^\/jobs\/([a-z]+-\d+)$/, "jobs", (m) => jobView(m[1]), false],
  [/^\/rules$/, "rules", (m, p) => rulesPage(p), false],
  [/^\/shadow$/, "shadow", () => shadowPage(), false],
  [/^\/audit$/, "audit", () => auditPage(), false],
];

async function route() {
  clearTimeout(refreshTimer);
  const serial = ++renderCount;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, queryString] = hash.split("?");
  const params = new URLSearchParams(queryString || "");
  for (const [pattern, nav, render, refresh] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("current", a.dataset.nav === nav));
    try {
      const content = await render(match, params);
      if (serial !== renderCount) return; // the user moved on meanwhile
      main.replaceChildren(...[content].flat().filter(Boolean));
      main.dataset.page = nav;
      main.dataset.ready = String(serial);
      if (refresh) refreshTimer = setTimeout(() => { if (!document.hidden) route(); }, REFRESH_MS);
    } catch (error) {
      if (serial !== renderCount) return;
      const text = error.status === 404 ? `Not found: ${error.message}` : `Could not load this page: ${error.message}`;
      main.replaceChildren(h("h1", {}, "Problem"), h("p", { class: "error-text" }, text));
      main.dataset.ready = String(serial);
    }
    return;
  }
  main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the dashboard")));
}

window.addEventListener("hashchange", () => { quiet(); route(); });
route();
