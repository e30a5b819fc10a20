// SVG charts, our own code: a line chart (FL loss/accuracy per round) and a bar chart
// (earnings per hour). They scale with their container (viewBox), take their colours from
// CSS classes (light and dark themes), and carry a visually hidden data table so screen
// readers get the numbers rather than a picture.

import { h } from "./dom.js";

// Drawing sizes in SVG units; on a phone a narrower canvas keeps the text legible.
const PHONE = matchMedia("(max-width: 720px)");
let W = 560;
let H = 240;
const M = { left: 52, right: 16, top: 14, bottom: 40 };

function size() {
  [W, H] = PHONE.matches ? [360, 220] : [560, 240];
}

/** fn() when the layout crosses the phone breakpoint (charts are redrawn); returns off(). */
export function onBreakpoint(fn) {
  PHONE.addEventListener("change", fn);
  return () => PHONE.removeEventListener("change", fn);
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

const fmt = (v) => (Math.abs(v) >= 1000 ? v.toExponential(1) : Number(v.toPrecision(3)).toString());

function frame(title, desc, legendItems, svgChildren, dataTable, pointCount) {
  return h("figure", { class: "chart", "data-points": pointCount },
    h("figcaption", { class: "chart-title" }, title),
    h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${desc}`, preserveAspectRatio: "xMidYMid meet" },
      h("title", `${title}: ${desc}`), svgChildren),
    legendItems.length ? h("ul", { class: "legend" }, legendItems.map(([name, cls]) =>
      h("li", h("span", { class: ["swatch", cls], "aria-hidden": "true" }), name))) : null,
    dataTable);
}

function axes(xTicks, yTicks, sx, sy, xLabel, yLabel, xFormat) {
  const g = h("g", { class: "axes" });
  for (const t of yTicks) {
    g.append(h("line", { class: "gridline", x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }));
    g.append(h("text", { class: "tick", x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t)));
  }
  for (const t of xTicks) {
    g.append(h("text", { class: "tick", x: sx(t), y: H - M.bottom + 16, "text-anchor": "middle" }, xFormat(t)));
  }
  g.append(h("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
  if (xLabel) g.append(h("text", { class: "axis-label", x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle" }, xLabel));
  if (yLabel) {
    g.append(h("text", { class: "axis-label", x: -(M.top + H - M.bottom) / 2, y: 13, transform: "rotate(-90)", "text-anchor": "middle" }, yLabel));
  }
  return g;
}

/**
 * series: [{name, points: [[x, y], …]}] (null y values are skipped);
 * opts: {xLabel, yLabel, yDomain: [lo, hi] to fix the scale, xFormat}.
 */
export function lineChart(title, series, { xLabel = "", yLabel = "", yDomain = null, xFormat = String } = {}) {
  size();
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const count = all.length;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xMin = count ? Math.min(...xs) : 0;
  const xMax = count ? Math.max(...xs, xMin + 1) : 1;
  const yTicks = yDomain ? niceTicks(yDomain[0], yDomain[1]) : niceTicks(count ? Math.min(...ys) : 0, count ? Math.max(...ys) : 1);
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (x) => M.left + ((x - xMin) / (xMax - xMin)) * (W - M.left - M.right);
  const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);
  const step = Math.max(1, Math.ceil((xMax - xMin) / (W < 500 ? 6 : 10)));
  const xTicks = [];
  for (let x = xMin; x <= xMax; x += step) xTicks.push(x);
  const plot = h("g", { class: "plot" });
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
    if (!pts.length) return;
    const cls = `series-${i}`;
    if (pts.length > 1) plot.append(h("polyline", { class: ["line", cls], points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" ") }));
    for (const [x, y] of pts) {
      plot.append(h("circle", { class: ["dot", cls], cx: sx(x), cy: sy(y), r: 4 }, h("title", `${s.name}, ${xLabel} ${xFormat(x)}: ${fmt(y)}`)));
    }
  });
  const empty = count ? null : h("text", { class: "empty-note", x: W / 2, y: H / 2, "text-anchor": "middle" }, "No data yet");
  const desc = count ? `${count} points across ${series.length} series` : "no data yet";
  const xsSorted = [...new Set(xs)].sort((a, b) => a - b);
  const dataTable = h("table", { class: "sr-only" },
    h("caption", title),
    h("thead", h("tr", h("th", { scope: "col" }, xLabel || "x"), series.map((s) => h("th", { scope: "col" }, s.name)))),
    h("tbody", xsSorted.map((x) => h("tr", h("th", { scope: "row" }, xFormat(x)),
      series.map((s) => h("td", fmt(s.points.find((p) => p[0] === x)?.[1] ?? NaN)))))));
  return frame(title, desc, series.map((s, i) => [s.name, `series-${i}`]),
    [axes(count ? xTicks : [], yTicks, sx, sy, xLabel, yLabel, xFormat), plot, empty], dataTable, count);
}

/** bars: [{label, value, title}], value >= 0; opts: {yLabel, format}. */
export function barChart(title, bars, { xLabel = "", yLabel = "", format = fmt, labelEvery = 0 } = {}) {
  size();
  const max = Math.max(0, ...bars.map((b) => b.value));
  const yTicks = niceTicks(0, max || 1, 4);
  const top = yTicks[yTicks.length - 1];
  const sy = (y) => H - M.bottom - (y / top) * (H - M.top - M.bottom);
  const band = (W - M.left - M.right) / Math.max(1, bars.length);
  const every = labelEvery || Math.max(1, Math.ceil(bars.length / 8));
  const plot = h("g", { class: "plot" });
  bars.forEach((b, i) => {
    const x = M.left + i * band + band * 0.15;
    const y = sy(b.value);
    plot.append(h("rect", { class: "bar", x, y, width: band * 0.7, height: Math.max(0, H - M.bottom - y) }, h("title", b.title || `${b.label}: ${format(b.value)}`)));
    if (i % every === 0) plot.append(h("text", { class: "tick", x: x + band * 0.35, y: H - M.bottom + 16, "text-anchor": "middle" }, b.label));
  });
  const g = axes([], yTicks, () => 0, sy, xLabel, yLabel, String);
  for (const t of g.querySelectorAll("text.tick")) t.textContent = format(Number(t.textContent));
  const dataTable = h("table", { class: "sr-only" }, h("caption", title),
    h("tbody", bars.map((b) => h("tr", h("th", { scope: "row" }, b.label), h("td", format(b.value))))));
  const desc = bars.length ? `${bars.length} bars, highest ${format(max)}` : "no data yet";
  return frame(title, desc, [], [g, plot], dataTable, bars.length);
}
