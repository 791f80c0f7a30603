// Tiny DOM helpers. Text always goes in as text nodes (never innerHTML), so data from the API cannot inject markup.
const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" && "value" in el) el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
export const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

// append children, skipping null/false (Element.append would print them as text)
export const put = (el, ...children) => build(el, {}, children);

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

// ---- formatting -----------------------------------------------------------------------------------------------
export function num(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  const a = Math.abs(x);
  if (a >= 1000) return x.toLocaleString("en-US", { maximumFractionDigits: 1 });
  if (a >= 1) return x.toFixed(Math.max(0, digits - 1));
  if (a === 0) return "0";
  return String(Number(x.toPrecision(digits)));
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(v >= 100 ? 0 : 1) : v} ${u[i]}`;
}

export function pct(x, digits = 1) {
  return x === null || x === undefined ? "—" : `${(100 * x).toFixed(digits)}%`;
}

export function when(ts) {
  if (!ts) return "—";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

export function ago(ts) {
  if (!ts) return "";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (Number.isNaN(s)) return "";
  if (s < 60) return `${Math.max(0, s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function duration(a, b) {
  if (!a) return "—";
  const t0 = new Date(a).getTime(), t1 = b ? new Date(b).getTime() : Date.now();
  const s = Math.max(0, (t1 - t0) / 1000);
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export const short = (hash, n = 12) => (hash ? String(hash).slice(0, n) : "—");

// ---- components -----------------------------------------------------------------------------------------------
const TONE = {
  succeeded: "ok", approved: "ok", green: "ok", pass: "ok", PASS: "ok", ok: "ok", true: "ok", verified: "ok",
  running: "info", queued: "muted", pending: "warn", review: "warn", yellow: "warn", interrupted: "warn",
  cancelled: "muted", UNGATED: "muted", "NO DATA": "muted", none: "ok", low: "ok", medium: "warn", high: "bad",
  failed: "bad", rejected: "bad", red: "bad", deny: "bad", FAIL: "bad", denied: "bad", refused: "bad", error: "bad",
  alarm: "bad", false: "bad", corrupt: "bad", fail: "bad", "not assessed": "warn", "not run": "warn", REPORTED: "muted",
};

export function pill(label, tone) {
  const t = tone || TONE[label] || "muted";
  return h("span", { class: `pill pill-${t}`, "data-value": String(label) },
    h("span", { class: "pill-dot", "aria-hidden": "true" }), String(label));
}

export function card(title, body, opts = {}) {
  const id = opts.id || `card-${Math.random().toString(36).slice(2, 8)}`;
  return h("section", { class: ["card", opts.class], "aria-labelledby": `${id}-h`, id: opts.sectionId },
    h("header", { class: "card-head" }, h("h2", { id: `${id}-h`, class: "card-title" }, title), opts.actions || null),
    h("div", { class: "card-body" }, body));
}

export function kv(rows) {
  return h("dl", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

// columns: [{label, key | render(row), class, num}]
export function table(caption, columns, rows, opts = {}) {
  if (!rows.length) return h("p", { class: "empty" }, opts.empty || "Nothing here yet.");
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h("table", { class: ["table", opts.class] },
      h("caption", { class: opts.showCaption ? "" : "sr-only" }, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", { "data-id": opts.rowId ? opts.rowId(r) : null },
        columns.map((c, i) => {
          const v = c.render ? c.render(r) : r[c.key];
          const cell = v instanceof Node ? v : (v === null || v === undefined ? "—" : String(v));
          return i === 0 && opts.rowHeader ? h("th", { scope: "row", class: c.num ? "num" : null }, cell)
            : h("td", { class: c.num ? "num" : null }, cell);
        }))))));
}

export function stat(label, value, opts = {}) {
  return h("div", { class: ["stat", opts.tone && `stat-${opts.tone}`], "data-stat": opts.key || label },
    h("div", { class: "stat-value" }, value), h("div", { class: "stat-label" }, label),
    opts.hint ? h("div", { class: "stat-hint" }, opts.hint) : null);
}

export function code(text) { return h("code", { class: "mono" }, text); }

export function hash(hex, n = 12) {
  if (!hex) return "—";
  return h("code", { class: "mono hash", title: hex }, short(hex, n));
}

export function notice(text, tone = "info") { return h("p", { class: `notice notice-${tone}` }, text); }

export function toast(text, tone = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${tone}` }, text);
  box.append(el);
  setTimeout(() => el.remove(), 6000);
}
