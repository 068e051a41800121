// The Routilux web UI: fills the server's page shells from the JSON API and keeps
// them current from the Server-Sent Event streams. Job data is untrusted: every
// piece of it reaches the page through textContent or attribute values, never as
// HTML. Mermaid (when the build shipped it) draws the diagrams in strict mode.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;

  // -- helpers ------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function when(seconds) {
    if (typeof seconds !== "number") return "";
    return new Date(seconds * 1000).toLocaleString();
  }

  function pretty(value) {
    try {
      return JSON.stringify(value, null, 2);
    } catch (err) {
      return String(value);
    }
  }

  async function api(path, options) {
    const init = Object.assign({ headers: {}, credentials: "same-origin" }, options || {});
    if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error ? data.error : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      error.field = data ? data.field : undefined;
      throw error;
    }
    return data;
  }

  function post(path, payload) {
    return api(path, {
      method: "POST",
      body: payload === undefined ? "{}" : JSON.stringify(payload),
    });
  }

  function setLive(state) {
    const live = document.getElementById("live");
    if (!live) return;
    live.textContent = state;
    live.dataset.state = state;
  }

  function listen(url, handlers) {
    // EventSource reconnects by itself and sends Last-Event-ID: the server replays.
    const source = new EventSource(url);
    source.onopen = () => setLive("live");
    source.onerror = () => setLive("reconnecting");
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => {
        let data = null;
        try {
          data = JSON.parse(event.data);
        } catch (err) {
          return;
        }
        handler(data, event);
      });
    }
    window.addEventListener("beforeunload", () => source.close());
    return source;
  }

  let mermaidReady = false;
  let diagramCount = 0;

  function mermaidLib() {
    if (body.dataset.mermaid !== "1" || !window.mermaid) return null;
    if (!mermaidReady) {
      window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
      mermaidReady = true;
    }
    return window.mermaid;
  }

  // Draw `source` into `container`; without Mermaid show the source and a note.
  function drawDiagram(container, source) {
    if (container.dataset.source === source) return;
    container.dataset.source = source || "";
    clear(container);
    if (!source) {
      container.append(el("p", { class: "note", text: "No diagram: the flow is not registered in this UI." }));
      return;
    }
    const lib = mermaidLib();
    if (!lib) {
      container.append(
        el("p", { class: "note", text: "Mermaid is not bundled in this installation; the diagram's source:" }),
        el("pre", { class: "mermaid-source", text: source }),
      );
      return;
    }
    diagramCount += 1;
    const holder = el("pre", { class: "mermaid", id: `diagram-${diagramCount}` });
    holder.textContent = source;
    container.append(holder);
    lib.run({ nodes: [holder] }).catch((err) => {
      clear(container);
      container.append(el("p", { class: "error", text: `Diagram error: ${err}` }), el("pre", { text: source }));
    });
  }

  // -- jobs page ----------------------------------------------------------------

  function jobsPage() {
    const table = document.querySelector("table#jobs tbody");
    const empty = document.getElementById("jobs-empty");
    const flowFilter = document.getElementById("filter-flow");
    const statusFilter = document.getElementById("filter-status");
    const sinceFilter = document.getElementById("filter-since");
    const flowIds = document.getElementById("flow-ids");
    const seenFlows = new Set();

    function query() {
      const params = new URLSearchParams();
      if (flowFilter.value.trim()) params.set("flow_id", flowFilter.value.trim());
      if (statusFilter.value) params.set("status", statusFilter.value);
      if (sinceFilter.value) params.set("since", String(Date.now() / 1000 - Number(sinceFilter.value)));
      params.set("limit", "500");
      return params;
    }

    function matches(job) {
      const flow = flowFilter.value.trim();
      if (flow && job.flow_id !== flow) return false;
      if (statusFilter.value && job.status !== statusFilter.value) return false;
      if (sinceFilter.value && job.created_at < Date.now() / 1000 - Number(sinceFilter.value)) return false;
      return true;
    }

    function noteFlow(flowId) {
      if (seenFlows.has(flowId)) return;
      seenFlows.add(flowId);
      flowIds.append(el("option", { value: flowId }));
    }

    function row(job) {
      const link = el("a", { href: `/jobs/${encodeURIComponent(job.job_id)}`, text: job.job_id });
      const status = el("td", { class: "status", text: job.status, dataset: { status: job.status } });
      if (job.waiting) status.title = `${job.waiting} open request(s) for input`;
      return el(
        "tr",
        { dataset: { jobId: job.job_id } },
        el("td", { class: "job" }, link),
        el("td", { class: "flow", text: job.flow_id }),
        status,
        el("td", { class: "created", text: when(job.created_at) }),
        el("td", { class: "updated", text: when(job.updated_at) }),
      );
    }

    function findRow(jobId) {
      for (const tr of table.rows) if (tr.dataset.jobId === jobId) return tr;
      return null;
    }

    function upsert(job, atTop) {
      noteFlow(job.flow_id);
      const existing = findRow(job.job_id);
      if (!matches(job)) {
        if (existing) existing.remove();
      } else if (existing) {
        existing.replaceWith(row(job));
      } else if (atTop) {
        table.prepend(row(job));
      } else {
        table.append(row(job));
      }
      empty.hidden = table.rows.length > 0;
    }

    let loading = 0;
    async function reload() {
      const mine = ++loading;
      try {
        const data = await api(`/api/jobs?${query()}`);
        if (mine !== loading) return;
        clear(table);
        for (const job of data.jobs) upsert(job, false);
        empty.hidden = table.rows.length > 0;
      } catch (err) {
        empty.hidden = false;
        empty.textContent = `Cannot list the jobs: ${err.message}`;
      }
    }

    for (const input of [flowFilter, statusFilter, sinceFilter]) {
      input.addEventListener("change", reload);
    }
    flowFilter.addEventListener("input", reload);
    document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
    api("/api/flows").then((data) => data.flows.forEach((flow) => noteFlow(flow.flow_id))).catch(() => {});
    listen("/api/events", {
      reset: reload,
      created: (job) => upsert(job, true),
      status: (job) => upsert(job, true),
    });
  }

  // -- job page -----------------------------------------------------------------

  function jobPage() {
    const jobId = body.dataset.jobId;
    const base = `/api/jobs/${encodeURIComponent(jobId)}`;
    const statusEl = document.getElementById("job-status");
    const message = document.getElementById("job-message");
    const routinesBody = document.querySelector("table#routines tbody");
    const timeline = document.getElementById("timeline");
    const outputs = document.getElementById("outputs");
    const errors = document.getElementById("errors");
    const shared = document.getElementById("shared-data");
    const sharedLog = document.getElementById("shared-log");
    const inputs = document.getElementById("inputs");
    const diagram = document.getElementById("diagram");
    const buttons = {
      pause: document.getElementById("pause"),
      resume: document.getElementById("resume"),
      cancel: document.getElementById("cancel"),
    };
    document.getElementById("job-id").textContent = jobId;
    let registered = false;
    let openRequests = "";

    function setStatus(status) {
      statusEl.textContent = status;
      statusEl.dataset.status = status;
      const finished = ["completed", "failed", "cancelled"].includes(status);
      buttons.pause.disabled = status !== "running";
      buttons.resume.disabled = status !== "paused" || !registered;
      buttons.cancel.disabled = finished;
    }

    function routineRow(rid) {
      for (const tr of routinesBody.rows) if (tr.dataset.routineId === rid) return tr;
      const tr = el(
        "tr",
        { dataset: { routineId: rid } },
        el("td", { class: "routine", text: rid }),
        el("td", { class: "class" }),
        el("td", { class: "deliveries", text: "0" }),
        el("td", { class: "state" }),
      );
      routinesBody.append(tr);
      return tr;
    }

    function renderInputs(requests) {
      const key = JSON.stringify(requests.map((r) => r.id));
      if (key === openRequests) return;
      openRequests = key;
      clear(inputs);
      document.getElementById("inputs-section").hidden = requests.length === 0;
      for (const request of requests) inputs.append(inputForm(request));
    }

    function inputForm(request) {
      const form = el("form", {
        class: "input-form",
        dataset: { inputSlot: request.slot, routineId: request.routine_id, requestId: request.id },
      });
      form.append(el("p", { class: "prompt", text: request.prompt || `${request.routine_id}.${request.slot}` }));
      const schema = request.schema;
      const defaults = request.defaults || {};
      if (schema === null || schema === undefined) {
        form.append(el("label", {}, "Data (JSON object) ", el("textarea", { name: "_data", rows: 3, text: "{}" })));
      } else {
        for (const [field, type] of Object.entries(schema)) {
          const attrs = { name: field, dataset: { type } };
          const has = Object.prototype.hasOwnProperty.call(defaults, field);
          if (type === "bool") {
            attrs.type = "checkbox";
            if (has && defaults[field] === true) attrs.checked = true;
          } else if (type === "int" || type === "float") {
            attrs.type = "number";
            attrs.step = type === "int" ? "1" : "any";
            if (!has) attrs.required = true;
          } else {
            attrs.type = "text";
            if (type === "list" || type === "dict") attrs.placeholder = type === "list" ? "[...] JSON" : "{...} JSON";
            if (!has && type === "str") attrs.required = false;
          }
          const input = el("input", attrs);
          if (has && type !== "bool" && defaults[field] !== null) {
            input.value = type === "list" || type === "dict" ? JSON.stringify(defaults[field]) : String(defaults[field]);
          }
          form.append(el("label", {}, `${field} (${type}) `, input));
        }
      }
      const error = el("p", { class: "error", role: "alert" });
      form.append(el("button", { type: "submit", text: "Send" }), error);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        error.textContent = "";
        let data;
        try {
          data = formData(form, schema);
        } catch (err) {
          error.textContent = err.message;
          return;
        }
        try {
          await post(`${base}/input`, { routine_id: request.routine_id, slot: request.slot, data });
          message.textContent = "Input sent.";
        } catch (err) {
          error.textContent = err.message;
        }
      });
      return form;
    }

    function formData(form, schema) {
      if (schema === null || schema === undefined) {
        const value = JSON.parse(form.elements.namedItem("_data").value || "{}");
        if (typeof value !== "object" || value === null || Array.isArray(value)) {
          throw new Error("the data must be a JSON object");
        }
        return value;
      }
      const data = {};
      for (const [field, type] of Object.entries(schema)) {
        const input = form.elements.namedItem(field);
        if (type === "bool") {
          data[field] = input.checked;
        } else if (type === "int" || type === "float") {
          if (input.value === "") continue;
          data[field] = Number(input.value);
        } else if (type === "list" || type === "dict") {
          if (input.value === "") continue;
          try {
            data[field] = JSON.parse(input.value);
          } catch (err) {
            throw new Error(`${field}: not valid JSON`);
          }
        } else {
          data[field] = input.value;
        }
      }
      return data;
    }

    function render(view) {
      registered = view.flow_registered;
      setStatus(view.status);
      const flowLink = document.getElementById("job-flow");
      flowLink.textContent = view.flow_id;
      if (registered) flowLink.href = `/flows/${encodeURIComponent(view.flow_id)}`;
      for (const routine of view.routines) {
        const tr = routineRow(routine.routine_id);
        tr.querySelector("td.class").textContent = routine.class || "";
        tr.querySelector("td.deliveries").textContent = String(routine.deliveries);
        tr.querySelector("td.state").textContent = Object.keys(routine.state).length ? JSON.stringify(routine.state) : "";
      }
      clear(timeline);
      if (view.timeline_dropped) {
        timeline.append(el("li", { class: "note", text: `${view.timeline_dropped} older records not shown` }));
      }
      for (const entry of view.timeline) {
        timeline.append(
          el(
            "li",
            { dataset: { routineId: entry.routine_id, event: entry.event } },
            el("time", { text: entry.time }),
            " ",
            el("strong", { text: entry.routine_id }),
            " ",
            el("span", { class: "event", text: entry.event }),
            " ",
            el("code", { text: JSON.stringify(entry.data) }),
          ),
        );
      }
      clear(outputs);
      if (!view.outputs.length) outputs.append(el("p", { class: "note", text: "None." }));
      for (const out of view.outputs) {
        outputs.append(
          el(
            "div",
            { class: "output" },
            el("strong", { text: `${out.routine_id} / ${out.output_type}` }),
            el("pre", { text: pretty(out.data) }),
          ),
        );
      }
      clear(errors);
      if (!view.errors.length) errors.append(el("p", { class: "note", text: "None." }));
      for (const err of view.errors) {
        errors.append(
          el(
            "details",
            { class: "error-entry" },
            el("summary", { text: `${err.routine_id}: ${err.error_type || "Error"}: ${err.error || ""} (${err.action})` }),
            el("pre", { class: "traceback", text: err.traceback || "" }),
          ),
        );
      }
      shared.textContent = pretty(view.shared_data);
      sharedLog.textContent = view.shared_log.map((entry) => JSON.stringify(entry)).join("\n");
      renderInputs(view.waiting_for);
      drawDiagram(diagram, view.mermaid);
    }

    // Deltas update the counts and status at once; the rest of the page is read
    // again shortly after (one read per burst of events, not a poll).
    let refresh = null;
    function refreshSoon() {
      if (refresh !== null) return;
      refresh = setTimeout(async () => {
        refresh = null;
        try {
          render(await api(base));
        } catch (err) {
          message.textContent = err.message;
        }
      }, 300);
    }

    function onChange(change) {
      if (change.delivery && change.delivery.routine_id) {
        const cell = routineRow(change.delivery.routine_id).querySelector("td.deliveries");
        cell.textContent = String(Number(cell.textContent || "0") + 1);
      }
      if (change.status) setStatus(change.status);
      refreshSoon();
    }

    for (const [action, button] of Object.entries(buttons)) {
      button.addEventListener("click", async () => {
        message.textContent = "";
        try {
          const result = await post(`${base}/${action}`);
          message.textContent = result.requested
            ? `${action} requested: the process running the job acts at its next heartbeat`
            : "";
          if (result.status) setStatus(result.status);
        } catch (err) {
          message.textContent = err.message;
        }
      });
    }
    listen(`${base}/events`, {
      reset: render,
      change: onChange,
      status: (summary) => {
        setStatus(summary.status);
        refreshSoon();
      },
      gone: () => {
        message.textContent = "The job was deleted from the store.";
      },
    });
  }

  // -- flows pages --------------------------------------------------------------

  function flowsPage() {
    const list = document.getElementById("flows");
    const only = body.dataset.flowId;
    const form = document.getElementById("start-job");
    const flowSelect = form.querySelector("select[name=flow]");
    const entrySelect = form.querySelector("select[name=entry]");
    const params = form.querySelector("textarea[name=params]");
    const hint = document.getElementById("entry-params");
    const error = document.getElementById("start-error");
    const details = new Map();

    function showEntries() {
      const flow = details.get(flowSelect.value);
      clear(entrySelect);
      if (!flow) return;
      for (const entry of flow.entries) entrySelect.append(el("option", { value: entry, text: entry }));
      showParams();
    }

    function showParams() {
      const flow = details.get(flowSelect.value);
      const names = flow && flow.entry_params ? flow.entry_params[entrySelect.value] || [] : [];
      hint.textContent = names.length
        ? `Parameters: ${names.map((p) => (p.required ? p.name : `${p.name}=${JSON.stringify(p.default)}`)).join(", ")}`
        : "";
    }

    async function load() {
      const data = await api("/api/flows");
      const flows = only ? data.flows.filter((flow) => flow.flow_id === only) : data.flows;
      clear(list);
      if (!flows.length) list.append(el("p", { class: "note", text: "No flows are registered (routilux ui --flow FILE)." }));
      for (const flow of flows) {
        const detail = await api(`/api/flows/${encodeURIComponent(flow.flow_id)}`);
        details.set(flow.flow_id, detail);
        const graph = el("div", { class: "diagram" });
        list.append(
          el(
            "section",
            { class: "flow", dataset: { flowId: flow.flow_id } },
            el("h2", {}, el("a", { href: `/flows/${encodeURIComponent(flow.flow_id)}`, text: flow.flow_id })),
            el("p", { text: `Entries: ${detail.entries.join(", ") || "none"}` }),
            graph,
          ),
        );
        drawDiagram(graph, detail.mermaid);
        flowSelect.append(el("option", { value: flow.flow_id, text: flow.flow_id }));
      }
      showEntries();
    }

    flowSelect.addEventListener("change", showEntries);
    entrySelect.addEventListener("change", showParams);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      let values;
      try {
        values = JSON.parse(params.value || "{}");
      } catch (err) {
        error.textContent = `Parameters: not valid JSON (${err.message})`;
        return;
      }
      try {
        const result = await post(`/api/flows/${encodeURIComponent(flowSelect.value)}/jobs`, {
          entry: entrySelect.value,
          params: values,
        });
        window.location.assign(`/jobs/${encodeURIComponent(result.job_id)}`);
      } catch (err) {
        error.textContent = err.message;
      }
    });
    setLive("");
    load().catch((err) => {
      error.textContent = err.message;
    });
  }

  if (page === "jobs") jobsPage();
  else if (page === "job") jobPage();
  else if (page === "flows") flowsPage();
})();
