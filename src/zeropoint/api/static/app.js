// Zeropoint Control Center: a hash-routed single page over the appliance's HTTP API.
// Every page is a function (main, ctx) that renders into <main>; ctx.signal aborts its requests and streams,
// and ctx.every() registers refreshes that stop when the user navigates away.
import { api, ApiError, can, follow, session, setUnauthorizedHandler } from "./api.js";
import { ciBars, lineChart } from "./charts.js";
import { ago, bytes, card, clear, code, put, duration, h, hash, kv, notice, num, pct, pill, stat, table, toast, when } from "./dom.js";

const $ = (sel) => document.querySelector(sel);
const TERMINAL_JOB = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const TERMINAL_RUN = new Set(["succeeded", "failed", "interrupted", "corrupt"]);

// ---- shell: login, session bar, router --------------------------------------------------------------------------
let current = null;   // {controller, timers}

function stopPage() {
  if (!current) return;
  current.controller.abort();
  current.timers.forEach(clearInterval);
  current = null;
}

function pageHeader(title, subtitle, actions) {
  return h("div", { class: "page-head" },
    h("div", {}, h("h1", { class: "page-title", tabindex: "-1" }, title), subtitle ? h("p", { class: "page-sub" }, subtitle) : null),
    actions ? h("div", { class: "page-actions" }, actions) : null);
}

function errorBox(e) {
  const msg = e instanceof ApiError ? `${e.status}: ${e.message}` : String(e && e.message || e);
  return h("div", { class: "notice notice-bad", role: "alert" }, msg);
}

function showLogin(message) {
  stopPage();
  session.token = null; session.me = null;
  const app = $("#app");
  app.dataset.state = "login";
  clear($("#session")); $("#appliance-id").textContent = "";
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
                             spellcheck: "false", "aria-describedby": "token-help", placeholder: "paste your API token" });
  const err = h("p", { class: "form-error", role: "alert", id: "login-error" }, message || "");
  const btn = h("button", { class: "btn btn-primary btn-block", type: "submit" }, "Sign in");
  const form = h("form", { class: "login-card", "aria-labelledby": "login-h", novalidate: true,
    onsubmit: async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) { err.textContent = "Enter an API token."; input.focus(); return; }
      btn.disabled = true; btn.textContent = "Signing in…";
      try {
        const me = await api("/v1/whoami", { token: t });
        session.token = t; session.me = me;
        startSession();
      } catch (e) {
        err.textContent = e instanceof ApiError && e.status === 401 ? "That token was not accepted (unknown or revoked)."
          : `Sign-in failed: ${e.message}`;
        btn.disabled = false; btn.textContent = "Sign in"; input.select();
      }
    } },
    h("div", { class: "login-brand" },
      h("img", { src: "/ui/favicon.svg", alt: "", width: "40", height: "40" }),
      h("div", {}, h("h1", { id: "login-h" }, "Zeropoint Control Center"),
        h("p", { class: "muted" }, "Training appliance console"))),
    h("label", { for: "token", class: "label" }, "API token"), input,
    h("p", { id: "token-help", class: "help" }, "Create one on the appliance with ", code("zpctl token create --role viewer"),
      ". It is kept in this tab's session storage only and sent as a bearer token to this appliance."),
    err, btn);
  const main = clear($("#main"));
  main.append(h("div", { class: "login-wrap" }, form));
  input.focus();
}

function renderSessionBar() {
  const me = session.me;
  const box = clear($("#session"));
  box.append(h("span", { class: "who" }, h("span", { class: "who-actor", title: me.actor }, me.actor.replace(/^token:/, "")),
    pill(me.role, "role")),
    h("button", { class: "btn btn-ghost", type: "button", id: "signout", onclick: () => { showLogin("Signed out."); } }, "Sign out"));
}

async function startSession() {
  $("#app").dataset.state = "ready";
  renderSessionBar();
  api("/v1/overview").then((o) => {
    $("#appliance-id").textContent = o.appliance_id;
    $("#sidenav-foot").textContent = `v${o.version.zeropoint} · ${o.device}`;
  }).catch(() => {});
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/overview";
  else route();
}

const ROUTES = [
  [/^overview$/, overviewPage, "overview", "Overview"],
  [/^runs$/, runsPage, "runs", "Runs & jobs"],
  [/^runs\/([\w.-]+)$/, runPage, "runs", "Run"],
  [/^jobs\/([\w.-]+)$/, jobPage, "runs", "Job"],
  [/^compare\/([\w.,-]+)$/, comparePage, "runs", "Compare runs"],
  [/^data$/, dataPage, "data", "Data"],
  [/^data\/([\w.-]+)$/, dataPage, "data", "Dataset"],
  [/^evals$/, evalsPage, "evals", "Evals & drift"],
  [/^safety$/, safetyPage, "safety", "Safety"],
  [/^releases$/, releasesPage, "releases", "Releases"],
  [/^audit$/, auditPage, "audit", "Audit"],
];

function route() {
  if (!session.me) return;
  stopPage();
  const path = decodeURIComponent(location.hash.replace(/^#\/?/, "")) || "overview";
  const hit = ROUTES.find(([re]) => re.test(path));
  const main = clear($("#main"));
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (hit && a.dataset.nav === hit[2]) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  closeNav();
  if (!hit) { main.append(pageHeader("Not found"), notice(`No page ${path}.`, "warn")); return; }
  const [re, fn, , title] = hit;
  const controller = new AbortController();
  current = { controller, timers: [] };
  const ctx = {
    signal: controller.signal,
    every(fn2, ms) { const t = setInterval(() => { if (!controller.signal.aborted) fn2(); }, ms); current.timers.push(t); },
  };
  document.title = `${title} · Zeropoint Control Center`;
  main.dataset.page = hit[2];
  fn(main, ctx, ...path.match(re).slice(1)).catch((e) => {
    if (!controller.signal.aborted) main.append(errorBox(e));
  });
  // move focus to the new page for keyboard and screen-reader users (not on the very first render)
  if (route.rendered) requestAnimationFrame(() => { const t = main.querySelector(".page-title"); (t || main).focus({ preventScroll: false }); });
  route.rendered = true;
}

function closeNav() { $("#app").classList.remove("nav-open"); $("#nav-toggle").setAttribute("aria-expanded", "false"); }

// a region whose content is replaced on each refresh, keeping focus and scroll where they were
function live(loader, ctx, ms) {
  const box = h("div", { class: "live" });
  let busy = false;
  const run = async () => {
    if (busy) return; busy = true;
    try {
      const node = await loader();
      if (ctx.signal.aborted) return;
      const had = box.contains(document.activeElement) ? document.activeElement.id : null;
      clear(box).append(node);
      if (had && document.getElementById(had)) document.getElementById(had).focus();
    } catch (e) {
      if (!ctx.signal.aborted) clear(box).append(errorBox(e));
    } finally { busy = false; }
  };
  run();
  if (ms) ctx.every(run, ms);
  box.refresh = run;
  return box;
}

// ---- overview ------------------------------------------------------------------------------------------------------
async function overviewPage(main, ctx) {
  main.append(pageHeader("Overview", "What this appliance is, whether it is healthy, and what it is running."));
  const STATES = ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"];
  const top = live(async () => {
    const o = await api("/v1/overview", { signal: ctx.signal });
    $("#appliance-id").textContent = o.appliance_id;
    const stats = h("div", { class: "stats", "aria-label": "Jobs by state", role: "group" },
      STATES.map((st) => stat(st, num(o.counts[st] || 0), { key: st,
        tone: st === "failed" && o.counts[st] ? "bad" : st === "running" && o.counts[st] ? "info" : null })));
    const ex = o.executor;
    const appliance = card("Appliance", kv([
      ["Appliance id", h("strong", { class: "mono", id: "ov-appliance-id" }, o.appliance_id)],
      ["Device", h("span", {}, code(o.device), " ", o.device_simulated ? pill("simulated", "bad") : pill("real compute", "ok"))],
      ["CPU", `${o.cpu.model || "unknown"} · ${o.cpu.usable_cores}/${o.cpu.logical_cores} cores`],
      ["Zeropoint", `${o.version.zeropoint}` + (o.version.commit ? ` (${o.version.commit.slice(0, 10)})` : "")],
      ["tinygrad", o.version.tinygrad], ["Python", o.version.python],
      ["Executor", ex ? h("span", {}, `${ex.name} · ${ex.max_concurrent} slot(s) `, pill(ex.alive ? "alive" : "stopped", ex.alive ? "ok" : "bad")) : "none"],
      ["Workspace", code(o.workspace)],
    ]));
    const running = card("Running", table("Running jobs", [
      { label: "Job", render: (j) => h("a", { href: `#/jobs/${j.id}` }, j.id) },
      { label: "Kind", key: "kind" },
      { label: "Run", render: (j) => j.runs.length ? h("a", { href: `#/runs/${j.runs[0].id}` }, j.runs[0].id) : "starting…" },
      { label: "Step", num: true, render: (j) => num(j.runs[0] && j.runs[0].step) },
      { label: "Loss", num: true, render: (j) => num(j.runs[0] && j.runs[0].loss, 4) },
      { label: "tok/s", num: true, render: (j) => num(j.runs[0] && j.runs[0].tokens_per_s) },
      { label: "Since", render: (j) => ago(j.started_at) },
    ], o.running, { empty: "No job is running." }));
    const queue = card(`Queue (${o.queue.length})`, table("Queued jobs, in start order", [
      { label: "#", num: true, render: (j) => String(o.queue.indexOf(j) + 1) },
      { label: "Job", render: (j) => h("a", { href: `#/jobs/${j.id}` }, j.id) },
      { label: "Kind", key: "kind" }, { label: "Submitter", key: "submitter" },
      { label: "Waiting", render: (j) => ago(j.created_at) },
    ], o.queue, { empty: "The queue is empty." }));
    return h("div", {}, stats, h("div", { class: "grid grid-2" }, appliance, h("div", { class: "stack" }, running, queue)));
  }, ctx, 3000);
  const health = live(async () => {
    const r = await api("/v1/status/health", { signal: ctx.signal });
    return card("Health", h("div", {},
      h("p", { class: "health-line" }, "Overall ", pill(r.status)),
      table("Health checks", [
        { label: "Check", key: "name" }, { label: "Status", render: (c) => pill(c.status) }, { label: "Detail", key: "detail" },
      ], r.checks, { rowHeader: true })), { actions: h("span", { class: "muted small" }, "checked ", when(new Date().toISOString())) });
  }, ctx, 30000);
  health.append(card("Health", h("p", { class: "muted" }, "Running health checks…")));
  main.append(top, health);
}

// ---- runs & jobs -----------------------------------------------------------------------------------------------------
function submitForm() {
  const path = h("input", { id: "job-config-path", name: "config_path", type: "text", placeholder: "configs/tiny_full.yaml",
                            "aria-describedby": "job-config-path-help", autocomplete: "off" });
  const inline = h("textarea", { id: "job-config-json", name: "config", rows: "4", spellcheck: "false",
                                 placeholder: '{"recipe": "llm_finetune", ...}', "aria-describedby": "job-config-json-help" });
  const overrides = h("textarea", { id: "job-overrides", name: "overrides", rows: "3", spellcheck: "false",
                                    placeholder: "train.steps=8\ntrain.lr=1e-3", "aria-describedby": "job-overrides-help" });
  const dry = h("input", { id: "job-dry-run", name: "dry_run", type: "checkbox" });
  const err = h("p", { class: "form-error", role: "alert" });
  const btn = h("button", { class: "btn btn-primary", type: "submit", id: "job-submit" }, "Submit training job");
  const form = h("form", { class: "form", id: "submit-form", onsubmit: async (ev) => {
    ev.preventDefault(); err.textContent = "";
    const body = { kind: "train", args: {}, dry_run: dry.checked };
    const p = path.value.trim(), j = inline.value.trim();
    if (p && j) { err.textContent = "Give either a config path or an inline JSON config, not both."; return; }
    if (!p && !j) { err.textContent = "Give a config: a YAML path under the data root, or a JSON config."; path.focus(); return; }
    if (p) body.config_path = p;
    else {
      try { body.config = JSON.parse(j); } catch (e) { err.textContent = `The inline config is not valid JSON: ${e.message}`; inline.focus(); return; }
    }
    const ov = overrides.value.split("\n").map((x) => x.trim()).filter(Boolean);
    const bad = ov.find((x) => !x.includes("="));
    if (bad) { err.textContent = `Override "${bad}" must look like key.path=value.`; overrides.focus(); return; }
    if (ov.length) body.args.overrides = ov;
    btn.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", body });
      toast(`Job ${job.id} queued`, "ok");
      location.hash = `#/jobs/${job.id}`;
    } catch (e) { err.textContent = e.message; } finally { btn.disabled = false; }
  } },
    h("div", { class: "form-row" },
      h("div", { class: "field" }, h("label", { for: "job-config-path", class: "label" }, "Recipe config (YAML path)"), path,
        h("p", { class: "help", id: "job-config-path-help" }, "Relative to the appliance's data root.")),
      h("div", { class: "field" }, h("label", { for: "job-overrides", class: "label" }, "Overrides"), overrides,
        h("p", { class: "help", id: "job-overrides-help" }, "One key=value per line, like ", code("--set"), " on the CLI."))),
    h("details", { class: "field" }, h("summary", {}, "…or paste an inline JSON config"),
      h("label", { for: "job-config-json", class: "label" }, "Inline config (JSON)"), inline,
      h("p", { class: "help", id: "job-config-json-help" }, "The same keys as the recipe YAML.")),
    h("div", { class: "form-actions" }, h("label", { class: "check", for: "job-dry-run" }, dry, " Dry run (no compute)"), btn),
    err);
  return card("New training job", form);
}

function jobsTable(jobs, ctx, refresh) {
  return table("Jobs", [
    { label: "Job", render: (j) => h("a", { href: `#/jobs/${j.id}` }, j.id) },
    { label: "Kind", render: (j) => j.kind + (j.dry_run ? " (dry run)" : "") },
    { label: "State", render: (j) => pill(j.state) },
    { label: "Submitter", key: "submitter" },
    { label: "Created", render: (j) => h("span", { title: when(j.created_at) }, ago(j.created_at)) },
    { label: "Runs", render: (j) => j.run_ids && j.run_ids.length ? h("span", {}, j.run_ids.map((r) => h("a", { href: `#/runs/${r}`, class: "mr" }, r))) : "—" },
    { label: "", render: (j) => can("submitter") && !TERMINAL_JOB.has(j.state)
        ? h("button", { class: "btn btn-small btn-danger-ghost", type: "button", "aria-label": `Cancel job ${j.id}`,
                        onclick: async () => { try { await api(`/v1/jobs/${j.id}/cancel`, { method: "POST" }); toast(`Cancel requested for ${j.id}`); refresh(); } catch (e) { toast(e.message, "bad"); } } }, "Cancel")
        : "" },
  ], jobs, { empty: "No jobs yet.", rowId: (j) => j.id });
}

async function runsPage(main, ctx) {
  main.append(pageHeader("Runs & jobs", "Jobs in the queue and the evidence runs they produced."));
  if (can("submitter")) main.append(submitForm());
  let jobsBox;
  jobsBox = live(async () => {
    const r = await api("/v1/jobs?limit=50", { signal: ctx.signal });
    return card("Jobs", jobsTable(r.jobs, ctx, () => jobsBox.refresh()), { actions: h("span", { class: "muted small" },
      Object.entries(r.counts).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(" · ")) });
  }, ctx, 3000);
  // runs ticked for comparison survive the table's refreshes
  const picked = new Set();
  const compareBtn = h("button", { class: "btn btn-small btn-compare", type: "button", id: "compare-runs", disabled: true,
    title: "Tick two or more runs to compare them",
    onclick: () => { location.hash = `#/compare/${[...picked].join(",")}`; } }, "Compare selected");
  const syncCompare = () => {
    compareBtn.disabled = picked.size < 2;
    compareBtn.textContent = picked.size ? `Compare selected (${picked.size})` : "Compare selected";
  };
  const runsBox = live(async () => {
    const r = await api("/v1/runs", { signal: ctx.signal });
    const runs = r.runs.slice().reverse();
    return card("Runs", table("Evidence runs, newest first", [
      { label: "Compare", render: (x) => h("input", { type: "checkbox", id: `pick-${x.id}`, checked: picked.has(x.id),
          "aria-label": `Select run ${x.id} for comparison`, "data-run": x.id,
          onchange: (ev) => { if (ev.target.checked) picked.add(x.id); else picked.delete(x.id); syncCompare(); } }) },
      { label: "Run", render: (x) => h("a", { href: `#/runs/${x.id}` }, x.id) },
      { label: "Kind", key: "kind" }, { label: "Status", render: (x) => pill(x.status) },
      { label: "Started", render: (x) => h("span", { title: when(x.started_at) }, ago(x.started_at)) },
      { label: "Duration", render: (x) => duration(x.started_at, x.ended_at) },
      { label: "Device", render: (x) => h("span", {}, x.device || "—", x.simulated ? [" ", pill("simulated", "bad")] : null) },
      { label: "Config", render: (x) => hash(x.config_sha256) },
    ], runs, { empty: "No runs yet." }), { actions: compareBtn });
  }, ctx, 3000);
  main.append(jobsBox, runsBox);
}

async function jobPage(main, ctx, jobId) {
  const head = h("div", {});
  const info = h("div", {});
  const runBox = h("div", { id: "job-run" });
  const logPre = h("pre", { class: "log", tabindex: "0", "aria-label": "Job log (last lines)" });
  main.append(head, info, runBox, card("Job log", logPre, { actions: h("span", { class: "muted small" }, "stdout and stderr of the job process") }));
  let shownRun = null, logOffset = 0, logText = "";
  const load = async () => {
    const j = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal: ctx.signal });
    clear(head).append(pageHeader(h("span", {}, "Job ", h("span", { class: "mono" }, j.id), " ", pill(j.state)),
      `${j.kind}${j.dry_run ? " (dry run)" : ""} · submitted by ${j.submitter} ${ago(j.created_at)}`,
      can("submitter") && !TERMINAL_JOB.has(j.state) ? h("button", { class: "btn btn-danger-ghost", type: "button", onclick: async () => {
        try { await api(`/v1/jobs/${j.id}/cancel`, { method: "POST" }); toast("Cancel requested"); load(); } catch (e) { toast(e.message, "bad"); }
      } }, "Cancel job") : null));
    clear(info).append(card("Job", kv([
      ["Command", code(`zpctl ${j.argv.join(" ")}`)], ["State", pill(j.state)],
      ["Config SHA-256", hash(j.config_sha256, 64)], ["Inputs SHA-256", hash(j.inputs_sha256, 64)],
      ["Created", when(j.created_at)], ["Started", when(j.started_at)], ["Ended", when(j.ended_at)],
      ["Exit code", j.exit_code === null ? "—" : String(j.exit_code)], ["Executor", j.executor],
      j.error ? ["Error", h("span", { class: "text-bad" }, j.error)] : null,
    ])));
    const rid = j.runs && j.runs.length ? j.runs[j.runs.length - 1].id : null;
    if (rid && rid !== shownRun) {
      shownRun = rid;
      clear(runBox).append(h("h2", { class: "section-title" }, "Run ", h("a", { href: `#/runs/${rid}` }, rid)));
      const panel = h("div", {});
      runBox.append(panel);
      runPanel(panel, rid, ctx).catch((e) => panel.append(errorBox(e)));
    } else if (!rid) {
      clear(runBox).append(notice(TERMINAL_JOB.has(j.state) ? "This job produced no run." : "Waiting for the job to start its run…"));
    }
    const r = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/logs?offset=${logOffset}`, {
      headers: { Authorization: `Bearer ${session.token}`, Accept: "text/plain" }, signal: ctx.signal, cache: "no-store" });
    if (r.ok) {
      const t = await r.text();
      logOffset = Number(r.headers.get("X-Log-Offset") || logOffset);
      if (t) {
        logText = (logText + t).slice(-20000);
        const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 8;
        logPre.textContent = logText.replace(/\r(?!\n)/g, "\n");
        if (atBottom) logPre.scrollTop = logPre.scrollHeight;
      } else if (!logText) logPre.textContent = "(no output yet)";
    }
    return j;
  };
  const first = await load();
  if (!TERMINAL_JOB.has(first.state)) {
    let done = false;
    ctx.every(async () => { if (done) return; try { const j = await load(); done = TERMINAL_JOB.has(j.state) && shownRun !== null; } catch { /* next tick */ } }, 1500);
  }
}

async function runPage(main, ctx, runId) {
  const panel = h("div", {});
  main.append(panel);
  await runPanel(panel, runId, ctx, true);
}

async function runPanel(box, runId, ctx, withHeader = false) {
  const r = await api(`/v1/runs/${encodeURIComponent(runId)}`, { signal: ctx.signal });
  const rec = r.run;
  const head = h("div", {});
  const statsBox = h("div", { class: "stats", role: "group", "aria-label": "Run figures" });
  const loss = lineChart({ label: "Training loss per step", yLabel: "loss", yFormat: (v) => num(v, 4) });
  const tps = lineChart({ label: "Throughput, tokens per second per step", yLabel: "tokens/s" });
  loss.el.id = "loss-chart"; tps.el.id = "tps-chart";
  const ckBox = h("div", {}, h("p", { class: "muted" }, "Verifying checkpoints…"));
  const perfBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const eventsBox = h("div", {});
  const streamState = h("span", { class: "muted small", id: "stream-state" }, "connecting…");

  function renderHead(status) {
    const actions = [];
    if (can("submitter") && ["interrupted", "failed"].includes(status) && rec.kind === "llm_finetune")
      actions.push(h("button", { class: "btn", type: "button", onclick: async () => {
        try { const j = await api("/v1/jobs", { method: "POST", body: { kind: "resume", args: { run: rec.id } } }); location.hash = `#/jobs/${j.id}`; }
        catch (e) { toast(e.message, "bad"); }
      } }, "Resume from last checkpoint"));
    const top = withHeader ? pageHeader(h("span", {}, h("span", { class: "mono" }, rec.id), " ", h("span", { id: "run-status" }, pill(status))),
      h("span", {}, `${rec.kind} · ${rec.command || ""}`, rec.job_id ? [" · job ", h("a", { href: `#/jobs/${rec.job_id}` }, rec.job_id)] : null), actions)
      : h("p", { class: "run-inline-head" }, "Status ", h("span", { id: "run-status" }, pill(status)), " ", actions);
    clear(head).append(rec.simulated ? h("div", { class: "banner-sim", role: "alert" }, rec.banner || "SIMULATED RUN - NOT REAL COMPUTE") : "", top);
  }
  renderHead(rec.status);

  const cfg = rec.config || {};
  const totalSteps = cfg.train && cfg.train.steps;
  const datasets = rec.datasets || [];
  box.append(head, statsBox,
    h("div", { class: "grid grid-2" },
      card("Loss", loss.el, { actions: streamState }), card("Throughput", tps.el, { actions: h("span", { class: "muted small" }, "tokens/s per step") })),
    h("div", { class: "grid grid-2" },
      card("Checkpoints", ckBox), card("Performance & energy", perfBox)),
    h("div", { class: "grid grid-2" },
      card("Datasets", table("Datasets this run read", [
        { label: "Dataset", render: (d) => h("a", { href: `#/data/${d.name}` }, d.name) },
        { label: "Version", key: "version" }, { label: "SHA-256", render: (d) => hash(d.sha256, 16) },
        { label: "License", render: (d) => (d.license && d.license.expression) || d.license || "—" },
        { label: "Files", num: true, render: (d) => num(d.file_count ?? (d.files ? d.files.length : null)) },
      ], datasets, { empty: "This run read no governed dataset." })),
      card("Configuration", h("div", {}, kv([
        ["Config SHA-256", hash(rec.config_sha256, 64)], ["Seed", rec.seed], ["Device", rec.device],
        ["tinygrad", rec.tinygrad_version], ["Git commit", rec.git_commit ? code(rec.git_commit.slice(0, 12)) : "—"],
        ["Hardware", hash(rec.hardware_fingerprint, 16)], ["Started", when(rec.started_at)], ["Ended", when(rec.ended_at)],
      ]), h("details", {}, h("summary", {}, "Full config"), h("pre", { class: "code-block", tabindex: "0" }, JSON.stringify(cfg, null, 2)))))),
    card("Events", eventsBox));

  const steps = new Map(), evals = new Map(), events = [];
  let status = rec.status, pending = false, lastStep = null, lastEval = null;
  function draw() {
    pending = false;
    const st = [...steps.values()].sort((a, b) => a.step - b.step);
    loss.update([{ name: "train loss", points: st.map((x) => [x.step, x.loss]), cls: "series-0" },
                 { name: "validation loss", points: [...evals.values()].sort((a, b) => a.step - b.step).map((x) => [x.step, x.val_loss]), cls: "series-1", dots: true }]);
    tps.update([{ name: "tokens/s", points: st.filter((x) => x.tokens_per_s != null).map((x) => [x.step, x.tokens_per_s]), cls: "series-2" }]);
    clear(statsBox).append(
      stat("step", lastStep ? `${num(lastStep.step)}${totalSteps ? ` / ${num(totalSteps)}` : ""}` : "—", { key: "step" }),
      stat("last loss", lastStep ? num(lastStep.loss, 4) : "—", { key: "loss" }),
      stat("tokens/s", lastStep ? num(lastStep.tokens_per_s) : "—", { key: "tokens_per_s" }),
      stat("step time", lastStep ? `${num(lastStep.step_ms)} ms` : "—", { key: "step_ms" }),
      stat("val loss", lastEval ? num(lastEval.val_loss, 4) : "—", { key: "val_loss", hint: lastEval ? `at step ${lastEval.step}` : null }),
      stat("elapsed", duration(rec.started_at, TERMINAL_RUN.has(status) ? rec.ended_at : null), { key: "elapsed" }));
    clear(eventsBox).append(table("Run events (newest first)", [
      { label: "Time", render: (e) => when(e.ts) }, { label: "Event", render: (e) => h("strong", {}, e.event) },
      { label: "Details", render: (e) => h("span", { class: "mono small" }, Object.entries(e).filter(([k]) => !["ts", "event"].includes(k))
        .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : (typeof v === "number" ? num(v, 4) : v)}`).join("  ")) },
    ], events.slice(-40).reverse(), { empty: "No events yet." }));
  }
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(draw); } };

  async function loadCheckpoints() {
    try {
      const c = await api(`/v1/runs/${encodeURIComponent(runId)}/checkpoints?verify=true`, { signal: ctx.signal });
      put(clear(ckBox), table("Checkpoints", [
        { label: "Checkpoint", render: (x) => h("span", { title: x.name }, "step ", h("strong", {}, num(x.step))) },
        { label: "Weights", render: (x) => (x.weights || "—").replace(/\.safetensors$/, "") },
        { label: "Size", num: true, render: (x) => bytes(x.bytes) },
        { label: "Integrity", render: (x) => x.verified === true ? pill("verified", "ok")
            : x.verified === false ? h("span", { title: x.verify_error }, pill("failed", "bad"), " ", h("span", { class: "small text-bad" }, x.verify_error)) : pill("unchecked") },
      ], c.checkpoints, { empty: "No checkpoints (yet)." }), c.checkpoints.length ? h("p", { class: "help" },
        "Verified = every file re-hashed just now and matched its manifest's SHA-256.") : null);
    } catch (e) { if (!ctx.signal.aborted) clear(ckBox).append(errorBox(e)); }
  }
  async function loadPerf() {
    try {
      const p = await api(`/v1/runs/${encodeURIComponent(runId)}/perf`, { signal: ctx.signal });
      if (!p.perf) { clear(perfBox).append(notice(p.reason, "muted")); return; }
      const f = p.perf, en = f.energy || {};
      clear(perfBox).append(kv([
        ["Steps", num(f.steps)], ["Compile / warm-up", f.compile_s != null ? `${num(f.compile_s)} s (${f.warmup_steps} steps)` : "—"],
        ["Steady step", f.steady_step_s && f.steady_step_s.median != null ? `${num(f.steady_step_s.median * 1000)} ms median (n=${f.steady_step_s.n})` : "—"],
        ["Throughput", f.tokens_per_s != null ? `${num(f.tokens_per_s)} tok/s` : "—"],
        ["Achieved", f.achieved_flops_per_s != null ? `${num(f.achieved_flops_per_s / 1e9)} GFLOP/s` : "—"],
        ["MFU", f.mfu != null ? pct(f.mfu, 2) : h("span", { class: "muted" }, "null", f.peak && f.peak.reason ? ` (${f.peak.reason})` : "")],
        ["Peak RSS", bytes(f.memory && f.memory.rss_peak_bytes)],
        ["Device memory peak", bytes(f.memory && f.memory.device_mem_peak_bytes)],
        ["Energy", en.energy_j != null ? `${num(en.energy_j)} J` + (en.source ? ` (${en.source})` : "")
          : h("span", { class: "muted" }, "null — ", en.reason || "not measured")],
        ["Cost", f.cost && f.cost.usd_total != null ? `$${num(f.cost.usd_total, 3)}${f.cost.usd_per_1m_tokens != null ? ` ($${num(f.cost.usd_per_1m_tokens, 3)} / 1M tokens)` : ""}${f.cost.complete ? "" : " (partial)"}`
          : h("span", { class: "muted" }, "null — ", f.cost && f.cost.reasons && f.cost.reasons.length ? f.cost.reasons.join("; ") : "not computed")],
      ]));
    } catch (e) { if (!ctx.signal.aborted) clear(perfBox).append(errorBox(e)); }
  }
  loadCheckpoints(); loadPerf(); draw();

  follow(`/v1/runs/${encodeURIComponent(runId)}/metrics`, ({ event, data }) => {
    if (event === "hello") { streamState.textContent = "live"; streamState.className = "live-dot small"; return; }
    if (event === "metric" && data) {
      if (data.event === "step") { steps.set(data.step, data); if (!lastStep || data.step >= lastStep.step) lastStep = data; }
      else {
        events.push(data);
        if (data.event === "eval" && data.val_loss != null) { evals.set(data.step, data); lastEval = data; }
        if (data.event === "checkpoint") loadCheckpoints();
      }
      schedule();
    } else if (event === "end") {
      status = data && data.status || status;
      streamState.textContent = `run ${status}`; streamState.className = "muted small";
      api(`/v1/runs/${encodeURIComponent(runId)}`, { signal: ctx.signal }).then((x) => { Object.assign(rec, x.run); renderHead(x.run.status); schedule(); }).catch(() => {});
      loadCheckpoints(); loadPerf();
    } else if (event === "error") { streamState.textContent = `stream error: ${data}`; }
  }, ctx.signal);
}

// ---- compare runs ---------------------------------------------------------------------------------------------------
async function comparePage(main, ctx, idList) {
  const ids = idList.split(",").filter(Boolean);
  main.append(pageHeader("Compare runs", `${ids.length} runs side by side: curves, final figures, the settings that differ and the data each read.`,
    h("a", { class: "btn", href: "#/runs" }, "Back to runs")));
  const c = await api(`/v1/compare?${ids.map((r) => `runs=${encodeURIComponent(r)}`).join("&")}`, { signal: ctx.signal });
  for (const w of c.warnings) main.append(h("div", { class: "notice notice-bad compare-warning", role: "alert" }, h("strong", {}, "Warning: "), w));
  const series = (curve, dots) => c.runs.map((r, i) => ({ name: r.label, points: r.curves[curve], cls: `cmp-${i % 6}`, dots }));
  const loss = lineChart({ label: "Training loss per step, one line per run", yLabel: "loss", yFormat: (v) => num(v, 4) });
  const val = lineChart({ label: "Validation loss per step, one line per run", yLabel: "loss", yFormat: (v) => num(v, 4) });
  loss.el.id = "cmp-loss-chart"; val.el.id = "cmp-val-chart";
  const runHead = c.runs.map((r) => h("a", { href: `#/runs/${r.id}`, class: "mono" }, r.id));
  const cols = (render) => c.runs.map((r, i) => ({ label: runHead[i].cloneNode(true), render: (row) => render(row, i) }));
  const metricCell = (row, i) => row.values[i] === null ? h("span", { class: "muted", title: row.null_reasons[i] || "" }, "null")
    : (typeof row.values[i] === "number" ? num(row.values[i], 4) : String(row.values[i]));
  const show = (v) => v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v);
  const diffRows = Object.entries(c.config_diff).map(([key, values]) => ({ key, values }));
  const whyNull = [...new Set(c.metrics.flatMap((row) => row.values.map((v, i) => v === null && row.null_reasons[i] ? `${row.metric}: ${row.null_reasons[i]}` : null)).filter(Boolean))];
  const noData = c.runs.every((r) => !r.datasets.length);
  main.append(
    h("div", { class: "grid grid-2" }, card("Training loss", loss.el), card("Validation loss", val.el)),
    card("Final metrics", h("div", {}, table("Final metrics per run", [{ label: "Metric", render: (row) => h("code", {}, row.metric) }, ...cols(metricCell)],
      c.metrics, { empty: "No metrics recorded.", rowHeader: true, class: "compare-metrics" }),
      whyNull.length ? h("ul", { class: "help null-reasons" }, whyNull.map((w) => h("li", {}, `null — ${w}`))) : null)),
    h("div", { class: "grid grid-2" },
      card("Config diff", h("div", { id: "config-diff" }, diffRows.length
        ? table("Config keys whose values differ", [{ label: "Key", render: (row) => h("code", {}, row.key) },
            ...cols((row, i) => show(row.values[i]))], diffRows, { rowHeader: true })
        : notice("The configs are identical.", "muted"))),
      card("Data", h("div", {}, noData ? notice("None of these runs read a governed dataset.", "muted") : c.data.same ? notice("Same data in every run (dataset names and SHA-256).", "info") : notice("DIFFERENT DATA: see the warning above.", "bad"),
        table("Datasets each run read", [{ label: "Run", render: (r) => h("a", { href: `#/runs/${r.id}`, class: "mono" }, r.id) },
          { label: "Datasets", render: (r) => r.datasets.length ? h("span", {}, r.datasets.map((d) => h("span", { class: "mr" }, `${d.name} v${d.version} `, hash(d.sha256, 12)))) : "none" }],
          c.runs, { rowHeader: true })))));
  loss.update(series("train_loss", false));
  val.update(series("val_loss", true));
}

// ---- data ---------------------------------------------------------------------------------------------------------
async function dataPage(main, ctx, selected) {
  main.append(pageHeader("Data", "Registered datasets, their PII scans and license decisions, and approvals."));
  const listBox = live(async () => {
    const r = await api("/v1/datasets", { signal: ctx.signal });
    return card("Datasets", table("Registered datasets", [
      { label: "Dataset", render: (d) => h("a", { href: `#/data/${d.name}`, "aria-current": d.name === selected ? "true" : null }, d.name) },
      { label: "Files", num: true, render: (d) => num(d.files) }, { label: "Size", num: true, render: (d) => bytes(d.bytes) },
      { label: "License", render: (d) => code(d.license || "—") },
      { label: "Source", render: (d) => d.source && d.source.type || "—" },
      { label: "PII risk", render: (d) => d.pii_risk ? pill(d.pii_risk) : pill("not scanned", "warn") },
      { label: "Approval", render: (d) => pill(d.approval) },
    ], r.datasets, { empty: "No datasets registered. Add one with `zpctl data add` or POST /v1/datasets.", rowId: (d) => d.name }));
  }, ctx, 5000);
  main.append(listBox);
  if (selected) main.append(await datasetDetail(selected, ctx, () => listBox.refresh()));
  else main.append(notice("Select a dataset to see its PII summary, license decision and approval.", "muted"));
}

async function datasetDetail(name, ctx, onChange) {
  const box = h("div", { id: "dataset-detail" });
  async function render() {
    const [ds, checks] = await Promise.all([
      api(`/v1/datasets/${encodeURIComponent(name)}`, { signal: ctx.signal }),
      api(`/v1/datasets/${encodeURIComponent(name)}/checks`, { signal: ctx.signal }).catch((e) => ({ error: e.message })),
    ]);
    const ap = ds.approval || { status: "pending" };
    const pii = ds.pii;
    const lic = ds.license || {};
    const licCheck = (checks.checks || []).find((c) => c.rule === "licenses");
    const piiCheck = (checks.checks || []).find((c) => c.rule.startsWith("pii."));
    const actions = h("div", { class: "actions", id: "dataset-actions" });
    if (can("approver")) {
      const note = h("input", { id: "approve-note", type: "text", placeholder: "optional note" });
      const review = h("textarea", { id: "approve-review", rows: "2", placeholder: "why the flagged rules are acceptable" });
      const reason = h("input", { id: "reject-reason", type: "text", placeholder: "required to reject" });
      const err = h("p", { class: "form-error", role: "alert" });
      const approve = h("button", { class: "btn btn-primary", type: "button", id: "approve-btn", onclick: async () => {
        err.textContent = ""; approve.disabled = true;
        try {
          const body = { note: note.value.trim() || null, accept_review: review.value.trim() || null };
          await api(`/v1/datasets/${encodeURIComponent(name)}/approve`, { method: "POST", body });
          toast(`Dataset ${name} approved`, "ok"); await render(); onChange();
        } catch (e) {
          const failed = e.body && e.body.checks ? e.body.checks.filter((c) => c.outcome !== "pass").map((c) => `${c.outcome.toUpperCase()} ${c.rule}`).join("; ") : "";
          err.textContent = e.status === 409 ? `Approval refused by policy: ${failed || e.message}` : e.message; approve.disabled = false;
        }
      } }, "Approve");
      const reject = h("button", { class: "btn btn-danger", type: "button", id: "reject-btn", onclick: async () => {
        err.textContent = "";
        if (!reason.value.trim()) { err.textContent = "Give a reason to reject."; reason.focus(); return; }
        reject.disabled = true;
        try {
          await api(`/v1/datasets/${encodeURIComponent(name)}/reject`, { method: "POST", body: { reason: reason.value.trim() } });
          toast(`Dataset ${name} rejected`, "warn"); await render(); onChange();
        } catch (e) { err.textContent = e.message; reject.disabled = false; }
      } }, "Reject");
      put(actions,
        h("div", { class: "form-row" },
          h("div", { class: "field" }, h("label", { for: "approve-note", class: "label" }, "Approval note"), note),
          h("div", { class: "field" }, h("label", { for: "reject-reason", class: "label" }, "Rejection reason"), reason)),
        checks.would_approve === "review" ? h("div", { class: "field" }, h("label", { for: "approve-review", class: "label" },
          "Accept review (rules flagged for review pass only with a written reason)"), review) : null,
        h("div", { class: "form-actions" }, ap.status === "approved" ? null : approve, reject), err);
    } else {
      actions.append(h("p", { class: "muted", id: "approve-hint" }, `Approving or rejecting needs the approver role; you are ${session.me.role}.`));
    }
    if (can("submitter")) {
      actions.append(h("button", { class: "btn btn-ghost", type: "button", id: "scan-btn", onclick: async (ev) => {
        ev.target.disabled = true; ev.target.textContent = "Scanning…";
        try { await api(`/v1/datasets/${encodeURIComponent(name)}/scan`, { method: "POST" }); toast(`PII scan of ${name} done`, "ok"); await render(); onChange(); }
        catch (e) { toast(e.message, "bad"); ev.target.disabled = false; ev.target.textContent = "Run PII scan"; }
      } }, pii ? "Re-run PII scan" : "Run PII scan"));
    }
    const counts = pii ? Object.entries(pii.counts || {}).filter(([, v]) => v).sort((a, b) => b[1] - a[1]) : [];
    clear(box).append(
      h("h2", { class: "section-title" }, "Dataset ", h("span", { class: "mono" }, name), " ", pill(ap.status)),
      h("div", { class: "grid grid-2" },
        card("Manifest entry", kv([
          ["Description", ds.description], ["Version", ds.version], ["SHA-256", hash(ds.sha256, 64)],
          ["Files", `${num(ds.file_count)} (${bytes(ds.total_bytes)})`], ["Samples", `${num(ds.sample_count)} ${ds.sample_unit || ""}`],
          ["Source", `${ds.source && ds.source.type || "—"}${ds.source && ds.source.url ? ` · ${ds.source.url}` : ""}${ds.source && ds.source.organization ? ` · ${ds.source.organization}` : ""}`],
          ["Root", code(ds.root)], ["Added", `${when(ds.added_at)} by ${ds.added_by}`],
        ])),
        card("Approval", h("div", {}, kv([
          ["Status", pill(ap.status)], ["By", ap.approver], ["When", when(ap.time)],
          ap.reason ? ["Reason", ap.reason] : null, ap.note ? ["Note", ap.note] : null,
          ap.accepted_review ? ["Accepted review", ap.accepted_review] : null,
          ["Policy", ap.policy_version ? `v${ap.policy_version} (${(ap.policy_sha256 || "").slice(0, 12)})` : "—"],
          ["Policy preview", checks.would_approve ? pill(checks.would_approve === "pass" ? "would pass" : `would ${checks.would_approve}`, checks.would_approve === "pass" ? "ok" : checks.would_approve === "review" ? "warn" : "bad") : "—"],
        ]), actions))),
      h("div", { class: "grid grid-2" },
        card("License decision", kv([
          ["Declared", code(lic.expression || "—")], ["Decision", licCheck ? pill(licCheck.outcome) : "—"],
          ["Why", licCheck ? licCheck.detail : (checks.error || "—")],
          ["License texts found", (lic.texts || []).length ? (lic.texts || []).map((t) => `${t.path.split("/").pop()}: ${(t.identified || []).join(", ") || "unidentified"}${(t.deny_phrases || []).length ? " (deny phrases!)" : ""}`).join("; ") : "none"],
        ])),
        card("PII summary", pii ? h("div", {}, kv([
          ["Risk", pill(pii.risk)], ["Decision", piiCheck ? pill(piiCheck.outcome) : "—"],
          ["Density", `${num(pii.density_per_mb)} findings / MB`], ["Scanned", `${when(pii.scanned_at)} (${bytes(pii.bytes)})`],
          ["Scan matches contents", pii.dataset_sha256 === ds.sha256 ? pill("yes", "ok") : pill("no: re-scan", "bad")],
        ]), table("PII findings by type", [{ label: "Type", render: (x) => x[0] }, { label: "Findings", num: true, render: (x) => num(x[1]) }],
          counts, { empty: "No PII found." })) : notice("Not scanned yet: approval is refused until a PII scan is on record.", "warn"))),
      card("Policy checks", checks.checks ? table("Policy rules applied to this dataset", [
        { label: "Rule", render: (c) => code(c.rule) }, { label: "Outcome", render: (c) => pill(c.outcome) }, { label: "Detail", key: "detail" },
      ], checks.checks) : errorBox(checks.error), { actions: h("span", { class: "muted small" }, checks.note || "") }));
  }
  await render();
  return box;
}

// ---- evals & drift --------------------------------------------------------------------------------------------------
const metricText = (m) => m && typeof m === "object" ? `${num(m.value, 4)}${m.stderr != null ? ` ± ${num(m.stderr, 2)}` : ""}` : num(m, 4);

async function evalsPage(main, ctx) {
  main.append(pageHeader("Evals & drift", "Evaluation results, comparisons against saved baselines, and drift alarms."));
  const [ev, dr] = await Promise.all([api("/v1/evals", { signal: ctx.signal }), api("/v1/drift", { signal: ctx.signal })]);
  const alarms = dr.model.filter((x) => x.alarm).length + dr.data.filter((x) => x.dataset_drift).length;
  main.append(h("div", { class: "stats" }, stat("evals", num(ev.evals.length)), stat("baselines", num(ev.baselines.length)),
    stat("drift reports", num(dr.model.length + dr.data.length)), stat("alarms", num(alarms), { tone: alarms ? "bad" : "ok" })));
  const rows = ev.evals.slice().sort((a, b) => String(b.ended_at || "").localeCompare(String(a.ended_at || "")));
  main.append(card("Eval results", table("Eval results, newest first", [
    { label: "Eval", render: (e) => code(e.id) },
    { label: "Model", render: (e) => { const m = e.model || {}; return h("span", { title: m.sha256 || "" }, m.ref || m.name || m.path || JSON.stringify(m)); } },
    { label: "Results", render: (e) => e.error ? h("span", { class: "text-bad" }, e.error) : h("ul", { class: "plain" }, Object.entries(e.tasks || {}).map(([t, x]) =>
        h("li", {}, h("strong", {}, t), ` (${num(x.n_docs)} docs): `, Object.entries(x.metrics || {}).map(([k, m]) => `${k} ${metricText(m)}`).join(" · ")))) },
    { label: "Ended", render: (e) => when(e.ended_at) }, { label: "Wall", num: true, render: (e) => e.wall_s != null ? `${num(e.wall_s)} s` : "—" },
  ], rows, { empty: "No evals yet: run `zpctl eval run`." }), { actions: h("span", { class: "muted small" },
    ev.baselines.length ? `baselines: ${ev.baselines.join(", ")}` : "no baselines saved") }));
  main.append(card("Baseline comparisons", dr.model.length ? h("div", { class: "stack" }, dr.model.map((d) => h("article", { class: "subcard" },
    h("h3", {}, code(d.eval_id), " vs baseline ", h("strong", {}, d.baseline), " ", d.alarm ? pill(`${d.n_alarms} alarm(s)`, "bad") : pill("no alarm", "ok")),
    d.missing_tasks && d.missing_tasks.length ? notice(`Tasks missing from the current eval: ${d.missing_tasks.join(", ")}`, "warn") : null,
    table(`Comparison of ${d.eval_id} with ${d.baseline}`, [
      { label: "Task", key: "task" }, { label: "Metric", key: "metric" },
      { label: "Baseline", num: true, render: (c) => num(c.baseline, 4) }, { label: "Current", num: true, render: (c) => num(c.current, 4) },
      { label: "Δ", num: true, render: (c) => (c.delta > 0 ? "+" : "") + num(c.delta, 3) },
      { label: "Threshold", render: (c) => [c.threshold_abs != null ? `abs ${c.threshold_abs}` : null, c.threshold_rel != null ? `rel ${pct(c.threshold_rel, 0)}` : null].filter(Boolean).join(", ") || "—" },
      { label: "Significance", key: "significance" }, { label: "", render: (c) => c.alarm ? pill("alarm") : pill("ok") },
    ], d.comparisons)))) : h("p", { class: "empty" }, "No drift checks yet: run `zpctl drift check`.")));
  main.append(card("Data drift", table("Data drift reports", [
    { label: "Report", render: (d) => code(d.id) }, { label: "Kind", key: "kind" },
    { label: "Reference → current", render: (d) => `${(d.reference || "").split("/").pop()} (${num(d.n_reference)}) → ${d.current ? d.current.split("/").pop() : `random half, seed ${d.halves_seed}`} (${num(d.n_current)})` },
    { label: "Drifted features", num: true, render: (d) => `${num(d.n_drifted)} / ${num(d.n_features)}` },
    { label: "Share", num: true, render: (d) => `${pct(d.share_drifted)} (≥ ${pct(d.drift_share_threshold, 0)})` },
    { label: "Verdict", render: (d) => d.dataset_drift ? pill("drift", "bad") : pill("no drift", "ok") },
  ], dr.data, { empty: "No data drift reports yet: run `zpctl drift data`." })));
}

// ---- safety ----------------------------------------------------------------------------------------------------------
async function safetyPage(main, ctx) {
  main.append(pageHeader("Safety", "Red-team runs: attack success rate (ASR) per probe family with 95% bootstrap confidence intervals."));
  const r = await api("/v1/redteam", { signal: ctx.signal });
  if (!r.reports.length) { main.append(card("Red-team reports", h("p", { class: "empty" }, "No red-team runs yet: run `zpctl redteam MODEL`."))); return; }
  r.reports.forEach((rep, i) => {
    const gate = rep.gate || {};
    const per = Object.fromEntries((gate.families || []).map((f) => [f.family, f]));
    const fams = Object.entries(rep.families || {});
    const body = h("div", {},
      rep.simulated ? h("div", { class: "banner-sim" }, "SIMULATED RUN - NOT REAL COMPUTE") : null,
      kv([["Model", code(rep.model)], ["Responder", rep.responder || "—"], ["Suite", `${rep.suite} · ${rep.generations} generation(s) per probe`],
          ["Outputs", `${num(rep.outputs)} in ${num(rep.wall_s)} s on ${rep.device}`], ["Ended", when(rep.ended_at)],
          ["Overall ASR", `${pct(rep.overall.asr)} (95% CI ${pct(rep.overall.ci_low)}–${pct(rep.overall.ci_high)}), ${num(rep.overall.fails)} of ${num(rep.overall.total)} outputs failed`],
          ["Gate", h("span", {}, pill(gate.passed ? "PASS" : "FAIL"), rep.gate_enforced ? " enforced" : " advisory", gate.source ? h("span", { class: "muted small" }, ` · thresholds from ${gate.source}`) : null)]]),
      ciBars({ label: `ASR by family for ${rep.id}`, rows: fams.map(([f, x]) => ({ label: f, value: x.asr, lo: x.ci_low, hi: x.ci_high,
        threshold: per[f] ? per[f].threshold : null, verdict: per[f] ? per[f].verdict : null })) }),
      table(`ASR by family for ${rep.id}`, [
        { label: "Family", render: (x) => x[0] }, { label: "Probes", num: true, render: (x) => num(x[1].probes) },
        { label: "Outputs", num: true, render: (x) => num(x[1].total) }, { label: "Fails", num: true, render: (x) => num(x[1].fails) },
        { label: "ASR", num: true, render: (x) => pct(x[1].asr) }, { label: "95% CI", render: (x) => x[1].ci_low == null ? "—" : `${pct(x[1].ci_low)} – ${pct(x[1].ci_high)}` },
        { label: "Threshold", num: true, render: (x) => per[x[0]] && per[x[0]].threshold != null ? pct(per[x[0]].threshold) : "—" },
        { label: "Verdict", render: (x) => pill(per[x[0]] ? per[x[0]].verdict : "UNGATED") },
      ], fams, { rowHeader: true }));
    const title = h("span", {}, code(rep.id), " ", pill(gate.passed ? "PASS" : "FAIL"));
    main.append(i === 0 ? card(title, body) : h("details", { class: "card card-details" }, h("summary", { class: "card-title" }, title), h("div", { class: "card-body" }, body)));
  });
}

// ---- releases --------------------------------------------------------------------------------------------------------
const gatePill = (p) => pill(p === true ? "PASS" : p === false ? "FAIL" : "not run");
const signed = (x) => (x == null ? "—" : `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)}`);

function harmsTable(rel) {
  const hc = rel.harms_checklist;
  if (!hc) return notice("This bundle predates the harms checklist.", "warn");
  return table(`Harms checklist of ${rel.release_id}`, [
    { label: "Item", render: (i) => h("span", { title: i.question }, h("strong", {}, i.title), h("br"), h("span", { class: "muted small" }, i.question)) },
    { label: "Status", render: (i) => pill(i.status) },
    { label: "Evidence in the bundle, or why not assessed", render: (i) => i.status === "not assessed" ? h("span", {}, i.reason)
      : h("div", {}, h("ul", { class: "plain" }, i.evidence.map((e) => h("li", {}, code(e)))), h("p", { class: "muted small" }, i.reason)) },
  ], hc.items, { rowHeader: true, rowId: (i) => i.id });
}

function biasSection(rel) {
  const cats = Object.entries((rel.bias && rel.bias.categories) || {});
  if (!cats.length) return null;
  return h("div", { class: "stack", id: `bias-${rel.release_id}` },
    h("h3", { class: "section-title" }, `Bias probes vs the baseline model ${rel.bias.baseline_model || ""}`),
    ciBars({ label: `Stereotype preference by category for ${rel.release_id}`, metric: "stereotype preference",
      note: "Bars: share of minimal pairs whose stereotype-consistent sentence the model finds more likely (50% = no preference); whiskers: 95% bootstrap CI over templates; dark triangles: the baseline model; dashed marks: absolute thresholds.",
      rows: cats.map(([c, f]) => ({ label: c, value: f.score, lo: f.ci[0], hi: f.ci[1], base: f.baseline, threshold: f.threshold, verdict: f.verdict })) }),
    table(`Bias gate by category for ${rel.release_id}`, [
      { label: "Category", render: (x) => x[0] }, { label: "Pairs", num: true, render: (x) => num(x[1].pairs) },
      { label: "Finetune", num: true, render: (x) => `${pct(x[1].score)} (${pct(x[1].ci[0])}–${pct(x[1].ci[1])})` },
      { label: "Baseline", num: true, render: (x) => pct(x[1].baseline) },
      { label: "Change, points", num: true, render: (x) => `${signed(x[1].increase)} [${signed(x[1].increase_ci[0])}, ${signed(x[1].increase_ci[1])}]` },
      { label: "Verdict", render: (x) => pill(x[1].verdict) },
    ], cats, { rowHeader: true }));
}

async function releasesPage(main, ctx) {
  main.append(pageHeader("Releases", "Each release decision: every gate, the bias probes and the harms checklist, with the signed bundle re-verified on this page."));
  const r = await api("/v1/releases?verify=true", { signal: ctx.signal });
  if (!r.releases.length) { main.append(card("Releases", h("p", { class: "empty" }, "No releases yet: run `zpctl release CKPT --baseline NAME`."))); return; }
  r.releases.forEach((rel, i) => {
    if (rel.error) { main.append(card(code(rel.release_id), notice(rel.error, "bad"))); return; }
    const v = rel.verified;
    const body = h("div", { class: "stack" },
      rel.simulated ? h("div", { class: "banner-sim" }, "SIMULATED RUN - NOT REAL COMPUTE") : null,
      kv([["Decision", pill(rel.decision || (rel.passed ? "PASS" : "FAIL"))],
          ["Checkpoint", h("span", {}, code((rel.checkpoint || {}).run_id || "—"), " ", hash((rel.checkpoint || {}).tree_sha256))],
          ["Baseline", rel.baseline], ["Created", when(rel.created_at)], ["Device", rel.device],
          ["Bundle", h("span", { id: `verify-${rel.release_id}` }, v ? pill(v.ok ? "verified" : "failed") : "not checked", " ",
            v && !v.ok ? h("span", { class: "small" }, v.failed.map((c) => `${c.check}: ${c.detail}`).join("; ")) : null,
            v && v.ok && !v.key_trusted ? h("span", { class: "muted small" }, " with the key inside the bundle") : null, " ", code(rel.bundle))]]),
      h("h3", { class: "section-title" }, "Gates"),
      table(`Gates of ${rel.release_id}`, [
        { label: "Gate", key: "name" }, { label: "Result", render: (g) => gatePill(g.passed) },
        { label: "Why", render: (g) => h("span", { title: g.rule }, g.reason) },
        { label: "Reused", render: (g) => (g.reused ? "yes" : "") },
      ], rel.gates, { rowHeader: true, rowId: (g) => g.name }),
      h("h3", { class: "section-title" }, "Harms checklist"),
      h("div", { class: "harms", id: `harms-${rel.release_id}` }, harmsTable(rel)),
      biasSection(rel));
    const title = h("span", {}, code(rel.release_id), " ", pill(rel.decision || (rel.passed ? "PASS" : "FAIL")));
    main.append(i === 0 ? card(title, body) : h("details", { class: "card card-details" }, h("summary", { class: "card-title" }, title), h("div", { class: "card-body" }, body)));
  });
}

// ---- audit -----------------------------------------------------------------------------------------------------------
async function auditPage(main, ctx) {
  main.append(pageHeader("Audit", "The append-only, hash-chained log of every mutating or denied action."));
  if (!can("approver")) {
    main.append(notice(`The audit log is visible to approvers and admins; you are signed in as ${session.me.role}.`, "warn"));
    return;
  }
  const chainBox = h("div", { id: "chain" });
  const filter = h("input", { id: "audit-filter", type: "search", placeholder: "filter by action, actor, resource or outcome", autocomplete: "off" });
  const list = h("ol", { class: "timeline", id: "audit-timeline", "aria-label": "Audit events, newest first" });
  main.append(chainBox, card("Timeline", h("div", {}, h("div", { class: "field field-inline" }, h("label", { for: "audit-filter", class: "label" }, "Filter"), filter), list)));
  let events = [], total = 0;
  const renderList = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = events.filter((e) => !q || [e.action, e.actor, e.resource, e.outcome].join(" ").toLowerCase().includes(q)).slice(-300).reverse();
    clear(list).append(...(shown.length ? shown.map((e) => h("li", { class: `tl-item tl-${e.outcome}`, "data-seq": e.seq, "data-action": e.action },
      h("div", { class: "tl-head" }, h("span", { class: "tl-seq mono" }, `#${e.seq}`), h("strong", { class: "tl-action" }, e.action),
        h("span", { class: "tl-resource mono" }, e.resource), pill(e.outcome), h("span", { class: "tl-time muted small", title: e.ts }, when(e.ts))),
      h("div", { class: "tl-actor small" }, "by ", h("span", { class: "mono" }, e.actor)),
      h("details", {}, h("summary", { class: "small" }, "details"), h("pre", { class: "code-block" }, JSON.stringify(e.details, null, 2)),
        h("p", { class: "small muted mono" }, `hash ${e.hash} · prev ${e.prev_hash}`)))) : [h("li", { class: "empty" }, "No events match.")]));
  };
  filter.addEventListener("input", renderList);
  const load = async () => {
    const [v, head] = await Promise.all([api("/v1/audit/verify", { signal: ctx.signal }), api("/v1/audit?limit=1", { signal: ctx.signal })]);
    clear(chainBox).append(h("div", { class: `chain chain-${v.ok ? "ok" : "bad"}`, role: "status", id: "chain-status" },
      h("strong", {}, v.ok ? "Chain intact" : "Chain BROKEN"), " ",
      v.ok ? `${num(v.events)} events verified: every line's hash matches its content and links to the previous one, and the log ends at its recorded head.`
        : `at line ${v.first_bad_line}: ${v.reason}`,
      (v.problems || []).length ? h("span", { class: "small" }, ` (${v.problems.join("; ")})`) : null));
    if (head.total !== total) {
      const from = events.length ? total : Math.max(0, head.total - 500);
      const r = await api(`/v1/audit?offset=${from}&limit=1000`, { signal: ctx.signal });
      events = events.concat(r.events); total = head.total;
      renderList();
    }
  };
  await load();
  ctx.every(() => load().catch(() => {}), 4000);
}

// ---- boot ---------------------------------------------------------------------------------------------------------------
setUnauthorizedHandler((msg) => showLogin(`Your token was refused (${msg}). Sign in again.`));
window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {});
$("#nav-toggle").addEventListener("click", () => {
  const open = !$("#app").classList.contains("nav-open");
  $("#app").classList.toggle("nav-open", open);
  $("#nav-toggle").setAttribute("aria-expanded", String(open));
});
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeNav(); });
// the skip link must not touch the hash (the router owns it): move focus to <main> instead
document.querySelector(".skip-link").addEventListener("click", (e) => { e.preventDefault(); $("#main").focus(); });

(async function boot() {
  if (!session.token) return showLogin();
  try { session.me = await api("/v1/whoami"); startSession(); }
  catch (e) { showLogin(e instanceof ApiError && e.status === 401 ? "Your session's token is no longer valid." : `Cannot reach the appliance: ${e.message}`); }
})();
