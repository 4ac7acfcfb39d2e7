// ML Manager's pages: every value comes from the public REST API and is written with
// textContent (never innerHTML), so a model name, table name or log line is shown as text.
"use strict";

const API = document.body.dataset.api;
const ADMIN = document.body.dataset.admin === "true";
const UI = "/mlmanager";
const FINISHED = ["SUCCESS", "FAILURE", "CANCELLED"];
const STATUS_COLOURS = {
  SUCCESS: "#277c43", FAILURE: "#c82d4c", CANCELLED: "#8c9ba7", RUNNING: "#2272b4", PENDING: "#a3c4e0",
};

// --- helpers ---------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.field = body.field;
  }
}

// State-changing calls always say JSON (the API refuses other bodies: mlflow_server/csrf.py).
async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options, headers: { Accept: "application/json" } };
  if (options.body !== undefined) init.body = JSON.stringify(options.body);
  if (init.method && init.method !== "GET") init.headers["Content-Type"] = "application/json";
  const response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, init);
  const text = await response.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch { body = { message: text.slice(0, 300) }; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function showError(error) {
  const box = document.getElementById("page-error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function statusBadge(status) {
  return el("span", { class: `status status-${status}`, text: status });
}

function jobLink(id) {
  return el("a", { href: `${UI}/jobs/${id}`, text: `#${id}` });
}

// The model a payload names, as a link into MLflow's UI where it has a page.
function mlflowModelLink(uri, runId) {
  const registered = /^models:\/([^/@]+)\/(\d+)$/.exec(uri || "");
  if (registered) {
    const [, name, version] = registered;
    return el("a", { href: `/#/models/${encodeURIComponent(name)}/versions/${version}`, text: uri });
  }
  const run = /^runs:\/([^/]+)\//.exec(uri || "");
  const id = run ? run[1] : runId;
  if (id) {
    const link = el("a", { href: "#", text: uri || id });
    // MLflow's run page needs the experiment: read it, then point the link there.
    api(`/api/2.0/mlflow/runs/get?run_id=${encodeURIComponent(id)}`).then((r) => {
      link.href = `/#/experiments/${r.run.info.experiment_id}/runs/${id}`;
    }).catch(() => link.removeAttribute("href"));
    return link;
  }
  return document.createTextNode(uri || "");
}

function payloadSummary(payload) {
  const model = payload.model_uri || payload.run_id || "";
  const where = payload.db_table ? `${payload.db_schema || ""}.${payload.db_table}`
    : payload.endpoint_name || payload.app_name || payload.service || payload.name || "";
  return [model, where].filter(Boolean).join(" → ");
}

function setQuery(params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) query.set(k, v);
  const search = query.toString();
  history.replaceState(null, "", search ? `?${search}` : location.pathname);
}

// datetime-local inputs hold local time without a zone; the API wants ISO-8601.
function toIso(local) { return local ? new Date(local).toISOString() : ""; }
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

// --- Jobs ------------------------------------------------------------------------------
function jobsPage() {
  const form = document.getElementById("job-filters");
  const tbody = document.querySelector("#jobs-table tbody");
  const limit = 25;
  const initial = new URLSearchParams(location.search);
  const state = {
    sort: initial.get("sort") || "id", order: initial.get("order") || "desc",
    offset: Number(initial.get("offset") || 0), next: null,
  };
  for (const [key, value] of initial) {
    const input = form.elements.namedItem(key);
    if (input) input.value = input.type === "datetime-local" ? toLocalInput(value) : value;
  }
  api("handlers").then(({ handlers }) => {
    const select = document.getElementById("handler-filter");
    for (const h of handlers) select.append(el("option", { text: h.name }));
    select.value = initial.get("handler") || "";
  }).catch(showError);

  function filters() {
    const data = new FormData(form);
    const out = {};
    for (const [key, value] of data) out[key] = form.elements.namedItem(key).type === "datetime-local" ? toIso(value) : value;
    return out;
  }

  async function load() {
    const params = { ...filters(), sort: state.sort, order: state.order, offset: state.offset };
    setQuery(params);
    const query = new URLSearchParams(Object.entries({ ...params, limit, counts: "true" }).filter(([, v]) => v !== ""));
    try {
      const page = await api(`jobs?${query}`);
      showError(null);
      state.next = page.next_offset;
      tbody.replaceChildren(...page.jobs.map((job) => el("tr", {},
        el("td", {}, jobLink(job.id)),
        el("td", { text: job.handler_name }),
        el("td", {}, statusBadge(job.status)),
        el("td", { text: job.user }),
        el("td", { class: "wrap", text: payloadSummary(job.payload) }),
        el("td", { text: when(job.created_at) }),
        el("td", { text: when(job.finished_at) }),
      )));
      if (!page.jobs.length) tbody.append(el("tr", {}, el("td", { colspan: 7, text: "No jobs match." })));
      const counts = document.getElementById("counts");
      counts.replaceChildren(...Object.entries(page.counts || {}).map(([status, n]) => el("li", { text: `${status}: ${n}` })));
      document.getElementById("page-info").textContent =
        `Jobs ${page.jobs.length ? state.offset + 1 : 0}–${state.offset + page.jobs.length}`;
      document.getElementById("prev").disabled = state.offset === 0;
      document.getElementById("next").disabled = state.next === null;
      for (const button of document.querySelectorAll("th button[data-sort]")) {
        // aria-sort belongs to the column header, not to its button.
        const th = button.parentElement;
        if (button.dataset.sort === state.sort) th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
        else th.removeAttribute("aria-sort");
      }
    } catch (error) { showError(error); }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); state.offset = 0; load(); });
  for (const button of document.querySelectorAll("th button[data-sort]")) {
    button.addEventListener("click", () => {
      const column = button.dataset.sort;
      state.order = state.sort === column && state.order === "desc" ? "asc" : "desc";
      state.sort = column; state.offset = 0; load();
    });
  }
  document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - limit); load(); });
  document.getElementById("next").addEventListener("click", () => { if (state.next !== null) { state.offset = state.next; load(); } });
  // Live updates: the page re-reads the list every few seconds while "Live" is ticked.
  setInterval(() => { if (document.getElementById("live").checked && !document.hidden) load(); }, 5000);
  load();
}

// --- Job -------------------------------------------------------------------------------
function jobPage() {
  const jobId = document.body.dataset.jobId;
  const log = document.getElementById("log");
  const followButton = document.getElementById("follow");
  const logState = document.getElementById("log-state");
  let lastLine = 0;
  let source = null;
  let following = true;
  let finished = false;

  function renderJob(job) {
    const status = document.getElementById("job-status");
    status.replaceChildren(statusBadge(job.status));
    finished = FINISHED.includes(job.status);
    document.getElementById("cancel").hidden = finished || job.cancel_requested;
    const payload = document.getElementById("payload");
    payload.replaceChildren();
    payload.append(el("dt", { text: "handler" }), el("dd", { text: job.handler_name }));
    for (const [key, value] of Object.entries(job.payload)) {
      payload.append(el("dt", { text: key }), el("dd", { text: typeof value === "string" ? value : JSON.stringify(value) }));
    }
    const timeline = document.getElementById("timeline");
    timeline.replaceChildren();
    const rows = [
      ["user", job.user], ["created", when(job.created_at)], ["started", when(job.started_at)],
      ["finished", when(job.finished_at)], ["attempt", `${job.attempt} of ${job.max_attempts}`],
      ["worker", job.worker_id || ""], ["cancel requested", job.cancel_requested ? "yes" : "no"],
      ["error", job.error || ""],
    ];
    for (const [k, v] of rows) timeline.append(el("dt", { text: k }), el("dd", { text: v }));
    const links = document.getElementById("links");
    links.replaceChildren();
    if (job.payload.model_uri || job.payload.run_id) {
      links.append(el("li", {}, "MLflow: ", mlflowModelLink(job.payload.model_uri, job.payload.run_id)));
    }
    api("deployments?limit=500").then(({ deployments }) => {
      for (const d of deployments.filter((x) => x.job_id === job.id || x.details.undeployed_by_job === job.id)) {
        links.append(el("li", {}, "Deployment: ", el("a", { href: `${UI}/deployments#deployment-${d.id}`, text: `${d.target} ${d.name}` })));
      }
    }).catch(() => {});
  }

  function appendLine(line) {
    lastLine = line.line;
    log.append(el("span", { class: `lvl-${line.level}`, text: `${line.time} ${line.level.padEnd(7)} ${line.message}\n` }));
    if (following) log.scrollTop = log.scrollHeight;
  }

  function follow() {
    following = true;
    followButton.textContent = "Stop following";
    followButton.setAttribute("aria-pressed", "true");
    if (finished && source === null && lastLine > 0) return;
    source = new EventSource(`${API}/jobs/${jobId}/logs/stream?after=${lastLine}`);
    logState.textContent = "Following the log…";
    source.addEventListener("log", (event) => appendLine(JSON.parse(event.data)));
    source.addEventListener("end", (event) => {
      const job = JSON.parse(event.data);
      source.close(); source = null;
      renderJob(job);
      logState.textContent = `The job ended: ${job.status}.`;
    });
    source.onerror = () => { logState.textContent = "The log stream was interrupted; retrying…"; };
  }

  function stop() {
    following = false;
    if (source) { source.close(); source = null; }
    followButton.textContent = "Follow";
    followButton.setAttribute("aria-pressed", "false");
    logState.textContent = finished ? "" : "Not following.";
  }

  followButton.addEventListener("click", () => (following ? stop() : follow()));
  document.getElementById("cancel").addEventListener("click", async () => {
    if (!confirm(`Cancel job ${jobId}?`)) return;
    try { renderJob(await api(`jobs/${jobId}/cancel`, { method: "POST" })); showError(null); }
    catch (error) { showError(error); }
  });
  api(`jobs/${jobId}`).then((job) => { renderJob(job); follow(); }).catch(showError);
}

// --- Deployments -----------------------------------------------------------------------
function deploymentsPage() {
  const form = document.getElementById("deployment-filters");
  const list = document.getElementById("deployments");
  const initial = new URLSearchParams(location.search);
  for (const [key, value] of initial) {
    const input = form.elements.namedItem(key);
    if (input) input.value = value;
  }

  function card(d) {
    const spec = d.spec || {};
    const stats = d.stats || {};
    const rows = [["status", statusBadge(d.status)], ["model", mlflowModelLink(d.model_uri, d.run_id)], ["owner", d.user]];
    if (d.target === "database" && d.spec) {
      rows.push(["table", `${spec.db_schema}.${spec.db_table}`], ["mode", spec.mode],
        ["trigger", `${spec.trigger_mode} (${spec.trigger})`], ["model kind", `${spec.kind}, ${spec.format}`]);
    } else {
      for (const key of ["endpoint", "url", "replicas"]) if (d.details[key] !== undefined) rows.push([key, String(d.details[key])]);
    }
    if (stats.scoring_lag) rows.push(["scoring lag", `p50 ${stats.scoring_lag.p50_ms} ms, p99 ${stats.scoring_lag.p99_ms} ms (${stats.scoring_lag.rows} rows)`]);
    const backlog = d.details.backlog;
    if (backlog) rows.push(["backlog", backlog.error ? backlog.error : JSON.stringify(backlog)]);
    rows.push(["scoring errors", String(stats.scoring_errors || 0)]);
    if (stats.last_scoring_error) rows.push(["last error", stats.last_scoring_error]);
    rows.push(["drift", d.drift ? el("span", { class: "drift", text: d.drift.join("; ") }) : (d.status === "DEPLOYED" ? "none" : "")]);
    rows.push(["updated", when(d.updated_at)]);
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", {}, v));
    const jobsQuery = new URLSearchParams({ q: spec.db_table || d.name.split(".").pop() });
    const actions = el("div", { class: "actions" },
      d.job_id ? el("span", {}, "Deployed by ", jobLink(d.job_id)) : null,
      el("a", { href: `${UI}/?${jobsQuery}`, text: "Jobs that touched it" }));
    if (d.status === "DEPLOYED" && d.target === "database" && d.spec) {
      const replace = new URLSearchParams({ handler: "DEPLOY_DATABASE", db_schema: spec.db_schema, db_table: spec.db_table, replace: "true" });
      actions.append(el("a", { href: `${UI}/deploy?${replace}`, text: "Replace the model" }));
    }
    if (d.status !== "DELETED") {
      actions.append(el("button", {
        type: "button", class: "danger", text: "Undeploy",
        "aria-label": `Undeploy ${d.name}`,
        onclick: async () => {
          if (!confirm(`Undeploy ${d.name}?`)) return;
          try { const job = await api(`deployments/${d.id}`, { method: "DELETE" }); location.href = `${UI}/jobs/${job.id}`; }
          catch (error) { showError(error); }
        },
      }));
    }
    return el("article", { class: "card", id: `deployment-${d.id}`, "aria-labelledby": `dh-${d.id}` },
      el("h2", { id: `dh-${d.id}`, text: `${d.target}: ${d.name}` }), dl, actions);
  }

  async function load() {
    const params = Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ""));
    setQuery(params);
    try {
      const { deployments } = await api(`deployments?${new URLSearchParams({ ...params, limit: 50 })}`);
      // Drift and backlog are read live per deployment.
      const full = await Promise.all(deployments.map((d) => api(`deployments/${d.id}`).catch(() => d)));
      list.replaceChildren(...full.map(card));
      if (!full.length) list.append(el("p", { text: "No deployments match." }));
      showError(null);
    } catch (error) { showError(error); }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
}

// --- Deploy ----------------------------------------------------------------------------
// The form of a handler is generated from its payload schema in the OpenAPI document.
function resolveSchema(schema, doc) {
  if (schema && schema.$ref) return doc.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function fieldKind(schema) {
  const options = (schema.anyOf || [schema]).filter((s) => s.type !== "null");
  const main = options[0] || {};
  if (main.enum) return { kind: "enum", values: main.enum };
  if (main.const !== undefined) return { kind: "enum", values: [main.const] };
  if (main.type === "boolean") return { kind: "boolean" };
  if (main.type === "integer" || main.type === "number") return { kind: "number", step: main.type === "integer" ? "1" : "any", min: main.minimum, max: main.maximum };
  if (main.type === "object" || main.type === "array") return { kind: "json" };
  return { kind: "text", pattern: main.pattern };
}

function deployPage() {
  const form = document.getElementById("deploy-form");
  const fields = document.getElementById("fields");
  const handlerSelect = document.getElementById("handler");
  const query = new URLSearchParams(location.search);
  let doc = null;
  let current = {};

  function renderFields(handler) {
    const schema = resolveSchema({ $ref: doc["x-handler-payloads"][handler] }, doc);
    current = {};
    fields.replaceChildren();
    const required = new Set(schema.required || []);
    for (const [name, raw] of Object.entries(schema.properties || {})) {
      const prop = resolveSchema(raw, doc);
      const kind = fieldKind(prop);
      const id = `f-${name}`;
      const preset = query.get(name);
      let input;
      if (kind.kind === "boolean") {
        input = el("input", { type: "checkbox", id, name });
        input.checked = preset !== null ? preset === "true" : prop.default === true;
      } else if (kind.kind === "enum") {
        input = el("select", { id, name });
        if (!required.has(name) && prop.default === undefined) input.append(el("option", { value: "", text: "" }));
        for (const v of kind.values) input.append(el("option", { text: v }));
        input.value = preset ?? prop.default ?? "";
      } else if (kind.kind === "json") {
        input = el("textarea", { id, name, rows: 2, placeholder: "JSON" });
        input.value = preset ?? (prop.default !== undefined && JSON.stringify(prop.default) !== "{}" ? JSON.stringify(prop.default) : "");
      } else {
        input = el("input", { id, name, type: kind.kind === "number" ? "number" : "text", step: kind.step, min: kind.min, max: kind.max, size: 40 });
        input.value = preset ?? (prop.default ?? "");
      }
      input.setAttribute("aria-describedby", `${id}-help ${id}-error`);
      if (required.has(name)) input.setAttribute("aria-required", "true");
      current[name] = { input, kind: kind.kind, prop };
      const label = el("label", { for: id, text: `${name}${required.has(name) ? " *" : ""}` });
      const help = el("span", { class: "help", id: `${id}-help`, text: prop.description || "" });
      const error = el("p", { class: "field-error", id: `${id}-error`, "data-error-for": name, role: "alert" });
      fields.append(kind.kind === "boolean"
        ? el("div", { class: "field check" }, input, label, help, error)
        : el("div", { class: "field" }, label, input, help, error));
    }
  }

  function payload() {
    const out = {};
    for (const [name, { input, kind, prop }] of Object.entries(current)) {
      if (kind === "boolean") {
        if (input.checked !== (prop.default === true)) out[name] = input.checked;
      } else if (input.value === "") {
        continue;
      } else if (kind === "number") {
        out[name] = Number(input.value);
      } else if (kind === "json") {
        try { out[name] = JSON.parse(input.value); } catch { throw new ApiError(400, { message: `${name}: not valid JSON`, field: name }); }
      } else if (!(prop.default !== undefined && String(prop.default) === input.value && kind === "enum")) {
        out[name] = input.value;
      }
    }
    return out;
  }

  function clearErrors() {
    for (const node of document.querySelectorAll(".field-error")) node.textContent = "";
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    const box = document.getElementById("form-error");
    box.hidden = true; box.textContent = "";
  }

  function showFieldError(error) {
    // The API names the field (e.g. "db_table", "payload.db_table" or "primary_key.id").
    const parts = (error.field || "").replace(/^payload\.?/, "").split(".");
    const name = parts.find((p) => current[p]) || (error.field === "handler_name" ? "handler_name" : null);
    const target = name && document.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (target) {
      target.textContent = error.message;
      const input = current[name] ? current[name].input : handlerSelect;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } else {
      const box = document.getElementById("form-error");
      box.textContent = error.message; box.hidden = false;
    }
  }

  async function showPlan(job) {
    const section = document.getElementById("plan-section");
    const plan = document.getElementById("plan");
    const state = document.getElementById("plan-state");
    section.hidden = false; plan.textContent = "";
    state.replaceChildren("Dry run submitted as job ", jobLink(job.id), "…");
    const source = new EventSource(`${API}/jobs/${job.id}/logs/stream`);
    source.addEventListener("log", (event) => plan.append(`${JSON.parse(event.data).message}\n`));
    source.addEventListener("end", (event) => {
      source.close();
      const done = JSON.parse(event.data);
      state.replaceChildren("Dry run ", jobLink(done.id), ` ended: ${done.status}. Nothing was changed.`);
    });
  }

  // Registered models and their versions, through MLflow's own REST API.
  const modelSelect = document.getElementById("registered-model");
  const versionSelect = document.getElementById("model-version");
  api("/api/2.0/mlflow/registered-models/search?max_results=1000").then(({ registered_models }) => {
    for (const m of registered_models || []) modelSelect.append(el("option", { text: m.name }));
  }).catch(() => {});
  modelSelect.addEventListener("change", async () => {
    versionSelect.replaceChildren(el("option", { value: "", text: "choose…" }));
    versionSelect.disabled = !modelSelect.value;
    if (!modelSelect.value) return;
    const filter = `name='${modelSelect.value.replaceAll("'", "\\'")}'`;
    const { model_versions } = await api(`/api/2.0/mlflow/model-versions/search?${new URLSearchParams({ filter, max_results: 1000 })}`);
    for (const v of (model_versions || []).sort((a, b) => Number(b.version) - Number(a.version))) {
      versionSelect.append(el("option", { value: v.version, text: `${v.version}${v.current_stage && v.current_stage !== "None" ? ` (${v.current_stage})` : ""}` }));
    }
  });
  versionSelect.addEventListener("change", () => {
    if (current.model_uri && versionSelect.value) current.model_uri.input.value = `models:/${modelSelect.value}/${versionSelect.value}`;
  });

  handlerSelect.addEventListener("change", () => { clearErrors(); renderFields(handlerSelect.value); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const button = document.getElementById("submit");
    button.disabled = true;
    try {
      const body = { handler_name: handlerSelect.value, payload: payload() };
      const job = await api("jobs", { method: "POST", body });
      if (body.payload.dry_run) await showPlan(job);
      else location.href = `${UI}/jobs/${job.id}`;
    } catch (error) {
      if (error instanceof ApiError && error.status === 400) showFieldError(error);
      else showError(error);
    } finally { button.disabled = false; }
  });

  Promise.all([api("openapi.json"), api("handlers")]).then(([openapi, { handlers }]) => {
    doc = openapi;
    const offered = handlers.filter((h) => /^(DEPLOY|SCHEDULE)_/.test(h.name) && doc["x-handler-payloads"][h.name]);
    for (const h of offered) {
      handlerSelect.append(el("option", { value: h.name, text: `${h.name}${h.enabled ? "" : " (disabled)"}` }));
    }
    handlerSelect.value = query.get("handler") || "DEPLOY_DATABASE";
    if (!handlerSelect.value && offered.length) handlerSelect.value = offered[0].name;
    renderFields(handlerSelect.value);
  }).catch(showError);
}

// --- Admin -----------------------------------------------------------------------------
function adminPage() {
  const tbody = document.querySelector("#handlers-table tbody");
  async function load() {
    try {
      const { handlers } = await api("handlers");
      tbody.replaceChildren(...handlers.map((h) => {
        let enabled;
        if (ADMIN) {
          enabled = el("input", { type: "checkbox", role: "switch", "aria-label": `${h.name} enabled`, id: `switch-${h.name}` });
          enabled.checked = h.enabled;
          enabled.addEventListener("change", async () => {
            try { await api(`handlers/${h.name}/${enabled.checked ? "enable" : "disable"}`, { method: "POST" }); showError(null); }
            catch (error) { showError(error); }
            load();
          });
        } else {
          enabled = document.createTextNode(h.enabled ? "on" : "off");
        }
        return el("tr", {}, el("th", { scope: "row", text: h.name }), el("td", { text: h.description }),
          el("td", {}, enabled), el("td", { text: String(h.workers) }),
          el("td", { text: h.updated_by ? `${when(h.updated_at)} by ${h.updated_by}` : "" }));
      }));
      if (ADMIN) {
        const { workers, queue } = await api("workers");
        document.getElementById("queue").replaceChildren(...Object.entries(queue).map(([s, n]) => el("li", { text: `${s}: ${n}` })));
        document.querySelector("#workers-table tbody").replaceChildren(...workers.map((w) => el("tr", {},
          el("td", { text: w.id }), el("td", { text: w.handlers.join(", ") }), el("td", { text: when(w.last_seen_at) }))));
      }
    } catch (error) { showError(error); }
  }
  load();
  setInterval(() => { if (!document.hidden) load(); }, 10000);
}

// --- Overview (inline SVG charts) ------------------------------------------------------
function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function legend(names) {
  return el("ul", { class: "legend" }, ...names.map((n) => el("li", {}, el("span", { style: `background:${STATUS_COLOURS[n] || "#2272b4"}` }), n)));
}

function overviewPage() {
  api("jobs/daily?days=14").then(({ days }) => {
    const byDay = {};
    const today = new Date();
    for (let i = 13; i >= 0; i--) byDay[new Date(today.getTime() - i * 86400000).toISOString().slice(0, 10)] = {};
    for (const d of days) (byDay[d.day] ||= {})[d.status] = d.jobs;
    const keys = Object.keys(byDay).sort().slice(-14);
    const max = Math.max(1, ...keys.map((k) => Object.values(byDay[k]).reduce((a, b) => a + b, 0)));
    const width = 700, height = 220, bar = width / keys.length;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 30}`, role: "img", "aria-labelledby": "per-day-title" },
      svg("title", { id: "per-day-title", text: "Jobs per day by status" }));
    keys.forEach((key, i) => {
      let y = height;
      for (const status of Object.keys(STATUS_COLOURS)) {
        const n = byDay[key][status] || 0;
        if (!n) continue;
        const h = (n / max) * (height - 10);
        y -= h;
        chart.append(svg("rect", { x: i * bar + 4, y, width: bar - 8, height: h, fill: STATUS_COLOURS[status] },
          svg("title", { text: `${key} ${status}: ${n}` })));
      }
      chart.append(svg("text", { x: i * bar + bar / 2, y: height + 16, "text-anchor": "middle", "font-size": 10, fill: "#5f7281", text: key.slice(5) }));
    });
    chart.append(svg("text", { x: 4, y: 12, "font-size": 11, fill: "#5f7281", text: `max ${max}` }));
    const table = el("table", { class: "visually-hidden" }, el("caption", { text: "Jobs per day" }),
      ...keys.map((k) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: JSON.stringify(byDay[k]) }))));
    document.getElementById("per-day").replaceChildren(chart, legend(Object.keys(STATUS_COLOURS)), table);
  }).catch(showError);

  api("deployments?status=DEPLOYED&limit=100").then(({ deployments }) => {
    const lagged = deployments.filter((d) => d.stats && d.stats.scoring_lag);
    const box = document.getElementById("lag");
    if (!lagged.length) { box.replaceChildren(el("p", { class: "hint", text: "No asynchronous deployment has scored rows yet." })); return; }
    const max = Math.max(1, ...lagged.map((d) => d.stats.scoring_lag.p99_ms));
    const row = 28, width = 700, left = 220;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${lagged.length * row + 10}`, role: "img", "aria-labelledby": "lag-title" },
      svg("title", { id: "lag-title", text: "Scoring lag p50 and p99 per deployment" }));
    lagged.forEach((d, i) => {
      const lag = d.stats.scoring_lag;
      const scale = (v) => (v / max) * (width - left - 80);
      chart.append(
        svg("text", { x: 0, y: i * row + 18, "font-size": 11, fill: "#11171c", text: d.name.slice(0, 34) }),
        svg("rect", { x: left, y: i * row + 6, width: scale(lag.p99_ms), height: 16, fill: "#a3c4e0" }, svg("title", { text: `p99 ${lag.p99_ms} ms` })),
        svg("rect", { x: left, y: i * row + 10, width: scale(lag.p50_ms), height: 8, fill: "#2272b4" }, svg("title", { text: `p50 ${lag.p50_ms} ms` })),
        svg("text", { x: left + scale(lag.p99_ms) + 6, y: i * row + 18, "font-size": 11, fill: "#5f7281", text: `${lag.p50_ms} / ${lag.p99_ms} ms` }),
      );
    });
    box.replaceChildren(chart, el("p", { class: "hint", text: "Dark: p50, light: p99 of the latest batches." }));
  }).catch(showError);
}

const PAGES = { jobs: jobsPage, job: jobPage, deployments: deploymentsPage, deploy: deployPage, admin: adminPage, overview: overviewPage };
PAGES[document.body.dataset.page]?.();
