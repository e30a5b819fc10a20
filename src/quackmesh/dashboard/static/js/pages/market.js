// Marketplace: the market API's filters and sorting, results that update as you filter,
// "why nothing matches" when no node passes, and renting a node with a cost preview.

import { api, session, withQuery } from "../api.js";
import { field, fill, h, select } from "../dom.js";
import { nodeNames } from "../eventtext.js";
import { duck, parseDuck, shortAddr } from "../format.js";
import { setQuery } from "../router.js";
import { alert, badge, pageHeader, table } from "../ui.js";
import { hardwareText, reputationCell } from "./nodes.js";

const SORTS = [
  ["-reputation,price", "Best reputation, then price"],
  ["price", "Price per unit, lowest first"],
  ["price_per_hour", "Rental price, lowest first"],
  ["-gpu_memory,price", "Most GPU memory"],
  ["-cores", "Most CPU cores"],
  ["-ram", "Most RAM"],
  ["-stake", "Most stake"],
  ["-last_seen", "Seen most recently"],
];

// [query name, label, control factory, hint]
const FILTERS = [
  ["online", "Status", (v) => select([["", "any"], ["true", "online"], ["false", "offline or draining"]], { value: v })],
  ["workload", "Workload", (v, kinds) => select([["", "any"], ...kinds.map((k) => [k, k])], { value: v })],
  ["gpu_model", "GPU model contains", (v) => h("input", { type: "text", value: v, placeholder: "4090" })],
  ["min_gpus", "Min GPUs", (v) => h("input", { type: "number", min: 0, max: 64, value: v })],
  ["min_gpu_memory_gb", "Min GPU memory (GiB)", (v) => h("input", { type: "number", min: 0, step: "any", value: v })],
  ["min_cpu_cores", "Min CPU cores", (v) => h("input", { type: "number", min: 0, value: v })],
  ["min_ram_gb", "Min RAM (GiB)", (v) => h("input", { type: "number", min: 0, step: "any", value: v })],
  ["max_price", "Max price (DUCK/unit)", (v) => h("input", { type: "text", inputmode: "decimal", value: v, placeholder: "0.05" })],
  ["min_reputation", "Min reputation (0–1)", (v) => h("input", { type: "number", min: 0, max: 1, step: 0.05, value: v })],
  ["region", "Region", (v) => h("input", { type: "text", value: v, placeholder: "eu-west" })],
  ["dataset", "Holds dataset", (v) => h("input", { type: "text", value: v, placeholder: "mnist" })],
  ["rentable", "For rent", (v) => select([["", "any"], ["true", "rentable now"], ["false", "not rentable"]], { value: v })],
];

/** The form's values -> market API query (max_price typed in DUCK, sent in micro-DUCK). */
function apiQuery(values) {
  const q = { ...values };
  if (q.max_price) {
    const micro = parseDuck(q.max_price);
    q.max_price = micro === null ? q.max_price : micro;
  }
  return q;
}

// --- rent dialog ---------------------------------------------------------------------

function rentDialog() {
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": "rent-h" });
  document.body.append(dialog);
  const open = (node) => {
    const hours = h("input", { type: "number", min: 0.25, step: 0.25, value: 1, required: true });
    const budget = h("input", { type: "text", inputmode: "decimal", value: duck(Math.ceil(node.price_per_hour * 2), { symbol: false }), required: true });
    const preview = h("div", { class: "preview", "aria-live": "polite" });
    const result = h("div", { "aria-live": "polite" });
    const confirm = h("button", { type: "submit", class: "button primary", disabled: !session.address }, "Rent now");
    let seq = 0;
    const body = () => {
      const b = parseDuck(budget.value);
      return { nodes: [node.address], hours: Number(hours.value), budget: b ?? 0 };
    };
    const quote = async () => {
      const my = ++seq;
      if (!session.address) return fill(preview, alert("Sign in to see a quote and rent: the rental is paid from your wallet.", "info"));
      const req = body();
      if (!(req.hours > 0) || !req.budget) return fill(preview, alert("Enter the hours and a budget in DUCK.", "info"));
      try {
        const q = await api.post("/v1/rentals/quote", req);
        if (my !== seq) return;
        fill(preview, h("dl", { class: "facts", "data-testid": "quote" },
          h("div", h("dt", "Rate"), h("dd", `${duck(q.price_per_hour)} per hour`)),
          h("div", h("dt", "Hours"), h("dd", `${q.hours}`)),
          h("div", h("dt", "Cost (escrowed now)"), h("dd", { class: "quote-cost" }, duck(q.cost))),
          h("div", h("dt", "Budget"), h("dd", `${duck(q.budget)} ${q.within_budget ? "✓ enough" : "✗ too low"}`))),
          h("p", { class: "muted small" }, "Providers are paid per minute of online time from the escrow; whatever is left comes back when the rental ends or you cancel it."));
        confirm.disabled = !q.within_budget;
      } catch (err) {
        if (my === seq) fill(preview, alert(err.message));
      }
    };
    let timer = null;
    const later = () => {
      clearTimeout(timer);
      timer = setTimeout(quote, 250);
    };
    hours.addEventListener("input", later);
    budget.addEventListener("input", later);
    fill(dialog,
      h("form", {
        method: "dialog",
        onsubmit: async (e) => {
          e.preventDefault();
          confirm.disabled = true;
          try {
            const rental = await api.post("/v1/rentals", body());
            fill(result, alert(`Rented: rental ${rental.id}, ${duck(rental.escrowed)} escrowed. Submit jobs with this rental id; see it under Wallet.`, "success"));
          } catch (err) {
            fill(result, alert(err.message));
            confirm.disabled = false;
          }
        },
      },
      h("h2", { id: "rent-h" }, `Rent ${node.name}`),
      h("p", { class: "muted" }, `${hardwareText(node.hardware)} · ${duck(node.price_per_hour)} per hour`),
      h("div", { class: "form-grid" },
        field("Hours", hours),
        field("Budget (DUCK)", budget, "the most this rental may cost")),
      preview, result,
      h("div", { class: "dialog-actions" },
        h("button", { type: "button", class: "button", onclick: () => dialog.close() }, "Close"),
        session.address ? confirm : h("a", { class: "button primary", href: "#/signin?next=market", onclick: () => dialog.close() }, "Sign in to rent"))));
    dialog.showModal();
    quote();
  };
  return { open, dispose: () => dialog.remove() };
}

// --- page ----------------------------------------------------------------------------

export async function render(ctx) {
  const values = Object.fromEntries(FILTERS.map(([name]) => [name, ctx.query.get(name) || ""]));
  values.sort = ctx.query.get("sort") || SORTS[0][0];
  let kinds = [];
  try {
    const all = await api.get("/v1/nodes", { signal: ctx.signal });
    for (const n of all) nodeNames.set(n.address.toLowerCase(), n.name);
    kinds = [...new Set(all.flatMap((n) => n.workloads))].filter((k) => !k.startsWith("fl.secagg")).sort();
  } catch {
    // the filter still works as free text via the URL
  }
  if (values.workload && !kinds.includes(values.workload)) kinds.push(values.workload);
  const controls = {};
  const form = h("form", { class: "filters form-grid", role: "search", "aria-label": "Filter nodes" },
    FILTERS.map(([name, label, make]) => {
      controls[name] = make(values[name], kinds);
      controls[name].name = name;
      return field(label, controls[name]);
    }),
    field("Sort by", (controls.sort = select(SORTS, { value: values.sort, name: "sort" }))),
    h("div", { class: "form-actions" },
      h("button", { type: "submit", class: "button primary" }, "Apply filters"),
      h("button", { type: "button", class: "button", onclick: () => { for (const c of Object.values(controls)) c.value = ""; controls.sort.value = SORTS[0][0]; form.requestSubmit(); } }, "Reset")));
  const status = h("p", { class: "result-count", role: "status" });
  const results = h("div");
  const dialog = rentDialog();
  ctx.onCleanup(dialog.dispose);
  const active = Object.entries(values).filter(([k, v]) => k !== "sort" && v).length;
  // Open on wide screens; on a phone the results come first and the filters fold away.
  const filters = h("details", { class: "card filters-card", open: matchMedia("(min-width: 721px)").matches || undefined },
    h("summary", h("span", { class: "summary-title" }, "Filters"), active ? h("span", { class: "muted" }, ` · ${active} active`) : null),
    form);
  fill(ctx.root, pageHeader("Marketplace"), filters, h("section", { class: "card", "aria-labelledby": "results-h" }, h("h2", { id: "results-h" }, "Matching nodes"), status, results));

  const search = async () => {
    const current = Object.fromEntries(Object.entries(controls).map(([k, c]) => [k, c.value.trim()]));
    setQuery(current);
    const query = apiQuery(current);
    let page;
    try {
      page = await api.get(withQuery("/v1/market/nodes", query), { signal: ctx.signal });
    } catch (err) {
      if (err.name === "AbortError") return;
      status.textContent = "";
      return fill(results, alert(err.message));
    }
    status.textContent = `${page.total} node${page.total === 1 ? "" : "s"} match`;
    if (!page.nodes.length) return fill(results, await explainWhy(ctx, query));
    fill(results, table([
      { label: "Node", cell: (n) => h("div", h("a", { href: `#/nodes/${n.address}` }, n.name), h("div", { class: "mono muted" }, shortAddr(n.address))) },
      { label: "Status", cell: (n) => badge(n.status) },
      { label: "Hardware", cell: (n) => hardwareText(n.hardware) },
      { label: "Price", cell: (n) => h("div", `${duck(n.price_per_unit)}/unit`, h("div", { class: "muted small" }, n.price_per_hour ? `${duck(n.price_per_hour)}/h to rent` : "not for rent")) },
      { label: "Reputation", cell: (n) => reputationCell(n.reputation) },
      { label: "Stake", cell: (n) => duck(n.stake, { digits: 0 }) },
      { label: "Region · data", cell: (n) => h("div", n.region || "no region", h("div", { class: "muted small" }, n.datasets.map((d) => `${d.name} (${d.rows} rows)`).join(", ") || "no datasets")) },
      {
        label: "Rent",
        cell: (n) => (n.price_per_hour > 0 && !n.rental_id && n.status === "online"
          ? h("button", { type: "button", class: "button small", onclick: () => dialog.open(n), "aria-label": `Rent ${n.name}` }, "Rent…")
          : h("span", { class: "muted small" }, n.rental_id ? "rented" : "not for rent")),
      },
    ], page.nodes, { caption: "Nodes matching the filters" }));
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  await search();
}

async function explainWhy(ctx, query) {
  let why = null;
  try {
    why = await api.get(withQuery("/v1/market/nodes", { ...query, explain: "true" }), { signal: ctx.signal });
  } catch {
    // an older coordinator without explain: say what we can
  }
  const excluded = why?.excluded || [];
  return h("div", { class: "explain", "aria-labelledby": "why-h" },
    h("h3", { id: "why-h" }, "Why nothing matches"),
    h("p", { class: "explain-summary" }, why?.summary || "No node passes every filter. Loosen a filter and apply again."),
    excluded.length ? table([
      { label: "Node", cell: (x) => h("span", x.name || shortAddr(x.address)) },
      { label: "Filter", cell: (x) => h("span", { class: "mono" }, x.reason) },
      { label: "Why", cell: (x) => x.detail || "" },
    ], excluded, { caption: "Nodes and the filter that excludes each" }) : null);
}
