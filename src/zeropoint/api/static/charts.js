// Charts drawn as inline SVG (no chart library): a line chart for loss / tok/s curves and a bar chart with
// confidence-interval whiskers for attack success rates. Each chart carries a text summary for screen readers.
import { h, s, num, clear } from "./dom.js";

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d * 0.5; hi += d * 0.5; }
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw) || 10 * mag;
  const out = [];
  for (let k = Math.floor(lo / step); k <= Math.ceil(hi / step); k++) out.push(Number((k * step).toPrecision(12)));
  out.step = step;
  return out;
}

// tick labels with just enough decimals for the tick spacing (0.5 -> "4.5", 0.25 -> "4.25", 200 -> "1,200")
function tickFormat(step) {
  const dec = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9) + (String(step).replace(/0+$/, "").endsWith("25") ? 1 : 0));
  return (v) => Math.abs(v) >= 1000 ? v.toLocaleString("en-US", { maximumFractionDigits: dec }) : v.toFixed(dec);
}

// series: [{name, points: [[x, y], ...], cls}] ; the first series is the primary (its point count is exposed)
export function lineChart({ label, xLabel = "step", yLabel = "", height = 240, yFormat = num } = {}) {
  let width = 640, last = [];
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
                         preserveAspectRatio: "xMidYMid meet" });
  const legend = h("ul", { class: "legend", "aria-hidden": "true" });
  const summary = h("p", { class: "sr-only", "aria-live": "off" });
  const fig = h("figure", { class: "chart-fig" }, svg, legend, summary);
  const m = { l: 58, r: 16, t: 14, b: 38 };

  // drawn at the figure's real pixel width, so text keeps its size in a wide or a narrow card
  if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => {
    const w = Math.round(fig.getBoundingClientRect().width);
    if (w > 0 && Math.abs(w - width) > 4) update(last);
  }).observe(fig);

  function update(series) {
    last = series;
    const w = Math.round(fig.getBoundingClientRect().width);
    if (w > 0) width = Math.max(280, w);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    clear(svg); clear(legend);
    const all = series.flatMap((se) => se.points);
    const primary = series[0] ? series[0].points.length : 0;
    svg.setAttribute("data-points", String(primary));
    fig.setAttribute("data-points", String(primary));
    if (!all.length) {
      svg.append(s("text", { x: width / 2, y: height / 2, class: "chart-empty", "text-anchor": "middle" },
        "waiting for the first step…"));
      summary.textContent = `${label}: no data yet.`;
      return;
    }
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]).filter((y) => Number.isFinite(y));
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    const yt = niceTicks(Math.min(...ys), Math.max(...ys));
    const y0 = yt[0], y1 = yt[yt.length - 1], yTick = tickFormat(yt.step);
    const W = width - m.l - m.r, H = height - m.t - m.b;
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * W, Y = (y) => m.t + H - ((y - y0) / (y1 - y0 || 1)) * H;
    const g = s("g", { class: "axes" });
    for (const t of yt) {
      g.append(s("line", { x1: m.l, x2: m.l + W, y1: Y(t), y2: Y(t), class: "gridline" }));
      g.append(s("text", { x: m.l - 8, y: Y(t) + 4, "text-anchor": "end", class: "tick" }, yTick(t)));
    }
    for (const t of niceTicks(x0, x1, 6).filter((t) => t >= x0 && t <= x1 && Number.isInteger(t))) {
      g.append(s("line", { x1: X(t), x2: X(t), y1: m.t + H, y2: m.t + H + 4, class: "axis" }));
      g.append(s("text", { x: X(t), y: m.t + H + 17, "text-anchor": "middle", class: "tick" }, num(t)));
    }
    g.append(s("line", { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: "axis" }));
    g.append(s("text", { x: m.l + W / 2, y: height - 4, "text-anchor": "middle", class: "axis-label" }, xLabel));
    if (yLabel) g.append(s("text", { x: 12, y: m.t + H / 2, "text-anchor": "middle", class: "axis-label",
                                     transform: `rotate(-90 12 ${m.t + H / 2})` }, yLabel));
    svg.append(g);
    series.forEach((se, i) => {
      const pts = se.points.filter((p) => Number.isFinite(p[1]));
      if (!pts.length) return;
      const cls = se.cls || `series-${i}`;
      if (pts.length > 1) svg.append(s("polyline", { class: `line ${cls}`, points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ") }));
      const dots = pts.length <= 60 || se.dots ? pts : [pts[pts.length - 1]];
      for (const p of dots) svg.append(s("circle", { class: `dot ${cls}`, cx: X(p[0]), cy: Y(p[1]), r: se.dots ? 3.5 : 2.5 },
        s("title", {}, `${se.name} at ${xLabel} ${num(p[0])}: ${yFormat(p[1])}`)));
      const last = pts[pts.length - 1];
      legend.append(h("li", { class: cls }, h("span", { class: "swatch" }), `${se.name}`,
        h("span", { class: "legend-last" }, ` ${yFormat(last[1])} @ ${num(last[0])}`)));
    });
    summary.textContent = `${label}: ` + series.filter((se) => se.points.length).map((se) => {
      const p = se.points; return `${se.name} from ${yFormat(p[0][1])} at ${xLabel} ${p[0][0]} to ${yFormat(p[p.length - 1][1])} at ${xLabel} ${p[p.length - 1][0]} (${p.length} points)`;
    }).join("; ") + ".";
  }
  update([]);
  return { el: fig, update };
}

// rows: [{label, value, lo, hi, threshold, verdict, base}] with values in [0, 1]; `base` draws a baseline mark
export function ciBars({ label, rows, width = 640, metric = "ASR",
  note = "Bars: attack success rate; whiskers: 95% bootstrap CI; vertical marks: gate threshold." }) {
  const rowH = 30, m = { l: 150, r: 70, t: 10, b: 30 };
  const height = m.t + m.b + rows.length * rowH;
  const W = width - m.l - m.r, X = (v) => m.l + v * W;
  const svg = s("svg", { class: "chart ci-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: X(t), x2: X(t), y1: m.t, y2: height - m.b, class: "gridline" }));
    svg.append(s("text", { x: X(t), y: height - m.b + 16, "text-anchor": "middle", class: "tick" }, `${t * 100}%`));
  }
  rows.forEach((r, i) => {
    const y = m.t + i * rowH + rowH / 2;
    svg.append(s("text", { x: m.l - 10, y: y + 4, "text-anchor": "end", class: "bar-label" }, r.label));
    if (r.value === null || r.value === undefined) {
      svg.append(s("text", { x: m.l + 4, y: y + 4, class: "tick" }, "no data")); return;
    }
    const tone = r.verdict === "FAIL" ? "bad" : r.verdict === "PASS" ? "ok" : "neutral";
    svg.append(s("rect", { x: m.l, y: y - 8, width: Math.max(1, X(r.value) - m.l), height: 16, rx: 3, class: `bar bar-${tone}` },
      s("title", {}, `${r.label}: ${metric} ${(r.value * 100).toFixed(1)}%`)));
    if (r.lo !== null && r.lo !== undefined && r.hi !== null && r.hi !== undefined) {
      svg.append(s("line", { x1: X(r.lo), x2: X(r.hi), y1: y, y2: y, class: "whisker" }));
      svg.append(s("line", { x1: X(r.lo), x2: X(r.lo), y1: y - 6, y2: y + 6, class: "whisker" }));
      svg.append(s("line", { x1: X(r.hi), x2: X(r.hi), y1: y - 6, y2: y + 6, class: "whisker" }));
    }
    if (r.threshold !== null && r.threshold !== undefined)
      svg.append(s("line", { x1: X(r.threshold), x2: X(r.threshold), y1: y - 12, y2: y + 12, class: "threshold" },
        s("title", {}, `threshold ${(r.threshold * 100).toFixed(1)}%`)));
    if (r.base !== null && r.base !== undefined)
      svg.append(s("path", { d: `M${X(r.base)} ${y - 10} l5 -5 h-10 z M${X(r.base)} ${y + 10} l5 5 h-10 z`, class: "base-mark" },
        s("title", {}, `baseline ${(r.base * 100).toFixed(1)}%`)));
    svg.append(s("text", { x: width - m.r + 8, y: y + 4, class: "bar-value" }, `${(r.value * 100).toFixed(1)}%`));
  });
  const text = rows.map((r) => `${r.label}: ${r.value == null ? "no data" : (r.value * 100).toFixed(1) + "%"}` +
    (r.lo != null ? ` (95% CI ${(r.lo * 100).toFixed(1)}–${(r.hi * 100).toFixed(1)}%)` : "") +
    (r.base != null ? `, baseline ${(r.base * 100).toFixed(1)}%` : "") +
    (r.threshold != null ? `, threshold ${(r.threshold * 100).toFixed(1)}%, ${r.verdict}` : "")).join("; ");
  return h("figure", { class: "chart-fig" }, svg, h("figcaption", { class: "chart-note" }, note),
    h("p", { class: "sr-only" }, `${label}: ${text}.`));
}
