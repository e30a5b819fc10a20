// Overview: live counters, the animated network view, the feed of recent events.

import { api } from "../api.js";
import { fill, h, throttle } from "../dom.js";
import { category, describe, nodeNames } from "../eventtext.js";
import { events } from "../events.js";
import { duck, time } from "../format.js";
import { NetView } from "../netview.js";
import { badge, card, pageHeader, stats } from "../ui.js";

const FEED_MAX = 40;

function counters(s) {
  const health = h("span", { class: "health" }, badge(s.health.status), " ", h("span", { class: "stat-detail" }, s.health.detail));
  return stats([
    ["Nodes online", `${s.nodes_online}`, { key: "nodes_online", hint: `of ${s.nodes_total} registered` }],
    ["GPUs online", `${s.gpus_online}`, { key: "gpus_online", hint: `${s.slots_online} task slots` }],
    ["Jobs running", `${s.jobs_running}`, { key: "jobs_running", hint: `${s.jobs_queued} queued · ${s.jobs_succeeded_24h} done in 24 h` }],
    ["DUCK paid in 24 h", duck(s.paid_24h, { digits: 2 }), { key: "paid_24h", hint: `${s.jobs_failed_24h} jobs failed in 24 h` }],
    ["Network health", health, { key: "health" }],
  ], { "aria-label": "Network counters" });
}

const shown = new WeakMap(); // feed item -> its event, to re-describe once node names are known

function feedItem(e) {
  const li = h("li", { class: ["feed-item", `cat-${category(e.type)}`], "data-event-id": e.id },
    h("time", { datetime: new Date(e.at * 1000).toISOString() }, time(e.at)),
    h("span", { class: "feed-type" }, e.type),
    h("span", { class: "feed-text" }, describe(e)));
  shown.set(li, e);
  return li;
}

export async function render(ctx) {
  const counterBox = h("div", { class: "counters", "aria-live": "polite", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading counters…"));
  const canvas = h("canvas", { class: "netview", role: "img", "aria-label": "Network view" });
  const feed = h("ol", { class: "feed", "aria-live": "polite", "aria-relevant": "additions", "aria-label": "Recent events, newest first" });
  const legend = h("ul", { class: "legend net-legend" },
    [["online", "swatch-ok"], ["draining", "swatch-warn"], ["offline", "swatch-offline"], ["task out", "swatch-info"], ["result back", "swatch-ok"], ["payment", "swatch-gold"]]
      .map(([name, cls]) => h("li", h("span", { class: ["swatch", cls], "aria-hidden": "true" }), name)));
  fill(ctx.root,
    pageHeader("Network overview"),
    counterBox,
    h("div", { class: "overview-grid" },
      card("Network", h("div", { class: "net-wrap" }, canvas), legend),
      card("Recent events", feed)));

  const view = new NetView(canvas);
  ctx.onCleanup(() => view.destroy());

  const loadStats = async () => {
    const s = await api.get("/v1/stats", { signal: ctx.signal });
    view.clockOffset = s.server_time - Date.now() / 1000;
    const next = counters(s);
    const old = counterBox.querySelector(".stats");
    if (!old) fill(counterBox, next);
    else {
      // Replace only the cards that changed, so a screen reader announces just those.
      const fresh = [...next.children];
      [...old.children].forEach((card, i) => fresh[i].textContent !== card.textContent && card.replaceWith(fresh[i]));
    }
    counterBox.setAttribute("aria-busy", "false");
  };
  const loadNodes = async () => {
    const nodes = await api.get("/v1/nodes", { signal: ctx.signal });
    for (const n of nodes) nodeNames.set(n.address.toLowerCase(), n.name);
    view.setNodes(nodes);
    for (const li of feed.children) {
      const e = shown.get(li);
      if (e) li.querySelector(".feed-text").textContent = describe(e);
    }
  };

  // The backlog is drawn once node names are known; live events go on top meanwhile.
  const backlog = events.recent.slice(-FEED_MAX).reverse();
  fill(feed, h("li", { class: "muted feed-empty" }, "Waiting for events…"));

  const refreshStats = throttle(() => loadStats().catch(() => {}), 1500);
  const refreshNodes = throttle(() => loadNodes().catch(() => {}), 1500);
  ctx.onEvents({}, (batch) => {
    feed.querySelector(".feed-empty")?.remove();
    for (const e of batch) feed.prepend(feedItem(e));
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
    view.onEvents(batch);
    refreshStats();
    if (batch.some((e) => e.type.startsWith("node."))) refreshNodes();
  });
  ctx.every(10_000, () => {
    refreshStats();
    refreshNodes();
  });
  await Promise.all([loadStats(), loadNodes().catch(() => {})]);
  if (backlog.length) feed.querySelector(".feed-empty")?.remove();
  feed.append(...backlog.map(feedItem));
}
