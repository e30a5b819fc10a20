// Small shared widgets: page headings, badges, stat cards, alerts, tables that turn into
// cards on a phone, the sign-in prompt, copyable code.

import { session } from "./api.js";
import { h } from "./dom.js";

/** The page's <h1> (focus target after navigation) with optional actions beside it. */
export function pageHeader(title, ...actions) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, title), actions.length ? h("div", { class: "actions" }, actions) : null);
}

const TONES = {
  online: "ok", succeeded: "ok", paid: "ok", valid: "ok", healthy: "ok", active: "ok",
  running: "info", leased: "info", checking: "info", escrowed: "info", draining: "warn",
  queued: "muted", pending: "muted", unchecked: "muted", unpaid: "muted", refunded: "muted",
  rental: "info", ended: "muted", unverified: "muted",
  degraded: "warn", replicating: "warn", suspect: "warn",
  offline: "bad", failed: "bad", cancelled: "muted", slashed: "bad", invalid: "bad", down: "bad",
};

export function badge(text, tone) {
  return h("span", { class: ["badge", `tone-${tone || TONES[text] || "muted"}`] }, text);
}

/** A <dl> of stat cards: [[label, value, {key, hint}], …]. */
export function stats(items, props = {}) {
  return h("dl", { class: "stats", ...props }, items.map(([label, value, opts = {}]) =>
    h("div", { class: "stat" },
      h("dt", label),
      h("dd", { "data-stat": opts.key }, value),
      opts.hint ? h("dd", { class: "stat-hint" }, opts.hint) : null)));
}

/** A definition list of [label, value] pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => h("div", h("dt", k), h("dd", v))));
}

export function alert(text, tone = "error") {
  return h("p", { class: ["alert", tone], role: tone === "error" ? "alert" : "status" }, text);
}

export function card(title, ...children) {
  const id = `card-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), children);
}

/**
 * A table of rows; on narrow screens each row becomes a card whose cells carry their
 * column name (data-label). columns: [{label, cell: (row) => node|string, class}].
 */
export function table(columns, rows, { caption, empty = "Nothing yet.", rowProps } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { class: "grid" },
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", h("tr", columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
      h("tbody", rows.map((row) => h("tr", rowProps ? rowProps(row) : null,
        columns.map((c) => h("td", { "data-label": c.label, class: c.class }, c.cell(row))))))));
}

/** Shown instead of anything private while signed out. */
export function signInPrompt(what) {
  const back = encodeURIComponent(location.hash.replace(/^#\/?/, ""));
  return h("section", { class: "card signin-prompt", "aria-labelledby": "signin-needed" },
    h("h2", { id: "signin-needed" }, "Sign in to continue"),
    h("p", what),
    h("p", h("a", { class: "button primary", href: `#/signin?next=${back}` }, "Sign in with a wallet")));
}

export const signedIn = () => Boolean(session.address);

/** A <pre><code> block with a Copy button (the clipboard API needs a secure context). */
export function codeBlock(text, label = "Copy", ...extra) {
  const code = h("code", text);
  const status = h("span", { class: "copy-status", role: "status" });
  const button = h("button", {
    type: "button", class: "button small",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(code.textContent);
        status.textContent = "Copied";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(code);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        status.textContent = "Selected: press Ctrl+C to copy";
      }
      setTimeout(() => (status.textContent = ""), 3000);
    },
  }, label);
  return h("div", { class: "code" }, h("pre", { tabindex: "0" }, code), h("div", { class: "code-actions" }, button, extra, status));
}

/** A labelled meter bar for a value in [0, 1]. */
export function meter(label, value) {
  const bar = h("span", { class: "meter-fill" });
  bar.style.width = `${Math.round(Math.max(0, Math.min(1, value ?? 0)) * 100)}%`;
  return h("span", { class: "meter", role: "img", "aria-label": `${label} ${(value ?? 0).toFixed(2)}` },
    h("span", { class: "meter-label", "aria-hidden": "true" }, label),
    h("span", { class: "meter-track", "aria-hidden": "true" }, bar),
    h("span", { class: "meter-value", "aria-hidden": "true" }, (value ?? 0).toFixed(2)));
}
