// Hash routing (#/jobs/ID?x=1): deep links work without any server-side route, and the
// page never reloads. Each page is render(ctx) with a context that owns its timers and
// subscriptions, released when the user navigates away.

import { $$, fill, h } from "./dom.js";
import { events, matches } from "./events.js";

const routes = [];

/** route("jobs/:id", "Job", render) */
export function route(pattern, title, render) {
  const names = [];
  const re = new RegExp(
    `^${pattern.replace(/:([a-z]+)/g, (_, name) => {
      names.push(name);
      return "([^/]+)";
    })}$`,
  );
  routes.push({ re, names, title, render });
}

export function currentPath() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { path: decodeURIComponent(path).replace(/\/$/, ""), query: new URLSearchParams(query) };
}

export function navigate(path) {
  location.hash = `#/${path.replace(/^#?\//, "")}`;
}

/** Change the query string of the current route without re-rendering it. */
export function setQuery(params) {
  const { path } = currentPath();
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  history.replaceState(null, "", `#/${path}${s ? `?${s}` : ""}`);
}

class PageContext {
  constructor(root, params, query) {
    this.root = root;
    this.params = params;
    this.query = query;
    this.controller = new AbortController();
    this.cleanups = [];
  }

  get signal() {
    return this.controller.signal;
  }

  get active() {
    return !this.controller.signal.aborted;
  }

  /** fn(events) for new events matching the filter, while this page is shown. */
  onEvents(filter, fn) {
    this.cleanups.push(events.subscribe((batch) => {
      const mine = batch.filter((e) => matches(e, filter));
      if (mine.length && this.active) fn(mine);
    }));
  }

  every(ms, fn) {
    const id = setInterval(() => this.active && fn(), ms);
    this.cleanups.push(() => clearInterval(id));
  }

  onCleanup(fn) {
    this.cleanups.push(fn);
  }

  dispose() {
    this.controller.abort();
    for (const fn of this.cleanups.splice(0)) fn();
  }
}

let current = null;

export async function render({ focus = true } = {}) {
  const main = document.getElementById("main");
  const { path, query } = currentPath();
  let match = null;
  let found = routes[0];
  for (const r of routes) {
    match = r.re.exec(path);
    if (match) {
      found = r;
      break;
    }
  }
  const params = {};
  if (match) found.names.forEach((name, i) => (params[name] = match[i + 1]));
  current?.dispose();
  const ctx = new PageContext(main, params, query);
  current = ctx;
  const section = path.split("/")[0];
  for (const a of $$(".mainnav a")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${match ? found.title : "Not found"} · QuackMesh`;
  if (!match) {
    fill(main, h("h1", { tabindex: "-1" }, "Page not found"), h("p", h("a", { href: "#/" }, "Back to the overview")));
    return;
  }
  fill(main);
  try {
    await found.render(ctx);
  } catch (err) {
    if (err.name === "AbortError" || !ctx.active) return;
    console.error(err);
    main.append(h("p", { class: "alert error", role: "alert" }, `Could not show this page: ${err.message}`));
  }
  // Move focus to the new page's heading so screen readers announce the change.
  if (focus && ctx.active) main.querySelector("h1")?.focus({ preventScroll: true });
}

export function startRouter() {
  window.addEventListener("hashchange", () => {
    window.scrollTo(0, 0);
    render();
  });
  return render({ focus: false });
}
