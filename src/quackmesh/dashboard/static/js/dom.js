// Building DOM without innerHTML: text from the network is only ever a text node, so no
// markup from a node name or an error message can run (and the CSP forbids inline code).

const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set([
  "svg", "g", "path", "line", "polyline", "circle", "rect", "text", "title", "desc",
]);

function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "style") throw new Error("use el.style from code: the CSP forbids style attributes");
    else if (key === "value" || key === "checked" || key === "selected") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h("a", {href: "#/"}, "text", child, [more]) -> Element; null/false children are skipped. */
export function h(tag, props, ...children) {
  const el = SVG_TAGS.has(tag) ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  if (props && (props instanceof Node || typeof props !== "object" || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  setProps(el, props);
  append(el, children);
  return el;
}

/** Replace every child of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

let uid = 0;
/** A fresh id for label/aria wiring. */
export const newId = (prefix = "id") => `${prefix}-${++uid}`;

/** A labelled form field: <div class=field><label for>…</label><input id>…<small>hint</small></div>. */
export function field(label, control, hint) {
  if (!control.id) control.id = newId("f");
  const hintEl = hint ? h("small", { id: `${control.id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** <select> from [[value, label], …]. */
export function select(options, props = {}) {
  const current = props.value;
  const el = h("select", { ...props, value: undefined });
  for (const [value, label] of options) {
    el.append(h("option", { value, selected: String(value) === String(current ?? "") }, label));
  }
  return el;
}

/** Run fn at most once every `ms`, the last call always honoured (trailing edge). */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return (...args) => {
    const wait = last + ms - Date.now();
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn(...args);
    }, Math.max(0, wait));
  };
}
