// Nodes: every provider with status, hardware, reputation and its parts, stake and (for
// the node itself, signed in) earnings; "Add a node" gives the exact commands to join.
// Node detail (#/nodes/ADDRESS): stake, slashes, datasets, live activity, earnings chart.

import { api, session } from "../api.js";
import { barChart } from "../charts.js";
import { field, fill, h, throttle } from "../dom.js";
import { describe, nodeNames } from "../eventtext.js";
import { ago, duck, gib, shortAddr, time } from "../format.js";
import { alert, badge, card, codeBlock, facts, meter, pageHeader, stats, table } from "../ui.js";

export function hardwareText(hw) {
  const gpus = hw.gpus.length
    ? Object.entries(hw.gpus.reduce((acc, g) => ({ ...acc, [`${g.model} ${gib(g.memory_bytes)}`]: (acc[`${g.model} ${gib(g.memory_bytes)}`] || 0) + 1 }), {}))
      .map(([model, n]) => `${n}× ${model}`).join(", ")
    : "no GPU";
  return `${hw.cpu_cores} cores · ${gib(hw.ram_bytes)} RAM · ${gpus}`;
}

export function reputationCell(rep) {
  if (!rep) return h("span", { class: "muted" }, "new");
  return h("div", { class: "rep" },
    h("strong", { class: "rep-score" }, rep.score.toFixed(2)),
    h("div", { class: "rep-parts" },
      meter("validity", rep.validity), meter("timeliness", rep.timeliness), meter("uptime", rep.uptime)));
}

const isMe = (address) => session.address && address.toLowerCase() === session.address.toLowerCase();

// --- Add a node ----------------------------------------------------------------------

function joinScript({ origin, name, price, slots, pricePerHour, region, stake, devMode }) {
  const q = (s) => (/^[\w.:/@-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);
  const start = [
    `~/quackmesh/bin/quackmesh node start --coordinator ${q(origin)} \\`,
    `    --wallet ~/quackmesh-node.json${name ? ` --name ${q(name)}` : ""} --price ${q(price)} --slots ${slots} \\`,
    `    --stake ${stake}${devMode ? " --faucet" : ""}${Number(pricePerHour) > 0 ? ` --price-per-hour ${q(pricePerHour)}` : ""}${region ? ` --region ${q(region)}` : ""}`,
  ];
  return [
    "# 1. Install QuackMesh (Python 3.11 or newer) from a checkout of its repository",
    "#    (QUACKMESH_SRC: where you cloned it) into its own virtual environment",
    "python3 -m venv ~/quackmesh && ~/quackmesh/bin/pip install \"$QUACKMESH_SRC\"",
    "",
    "# 2. Create the node's wallet: an encrypted keystore (keep the password safe)",
    "export QUACKMESH_WALLET_PASSWORD='choose-a-long-password'",
    "~/quackmesh/bin/quackmesh wallet new --out ~/quackmesh-node.json",
    "",
    devMode
      ? `# 3. Join: register, stake ${stake} DUCK (--faucet mints it: development network) and take work`
      : `# 3. Join: register, stake ${stake} DUCK from the wallet and take work (Ctrl-C drains)`,
    ...start,
    "",
  ].join("\n");
}

function addNodePanel(minStake) {
  const inputs = {
    name: h("input", { type: "text", value: "", placeholder: "my-gaming-rig", maxlength: 64, autocomplete: "off" }),
    price: h("input", { type: "text", value: "0.01", inputmode: "decimal" }),
    slots: h("input", { type: "number", value: "2", min: 1, max: 256 }),
    pricePerHour: h("input", { type: "text", value: "0", inputmode: "decimal" }),
    region: h("input", { type: "text", value: "", placeholder: "eu-west", maxlength: 32 }),
  };
  const out = h("div");
  const download = h("a", { class: "button small", download: "join-quackmesh.sh", href: "#" }, "Download as a script");
  let url = null;
  const update = () => {
    const script = joinScript({
      origin: location.origin,
      name: inputs.name.value.trim(),
      price: inputs.price.value.trim() || "0.01",
      slots: Math.max(1, Number(inputs.slots.value) || 1),
      pricePerHour: inputs.pricePerHour.value.trim() || "0",
      region: inputs.region.value.trim(),
      stake: Math.ceil(minStake / 1e6),
      devMode: session.dev_mode,
    });
    fill(out, codeBlock(script, "Copy all commands", download));
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(new Blob([`#!/bin/sh\nset -e\n${script}`], { type: "text/x-shellscript" }));
    download.href = url;
  };
  for (const el of Object.values(inputs)) el.addEventListener("input", update);
  update();
  return h("section", { id: "add-node", class: "card add-node", hidden: true, "aria-labelledby": "add-node-h" },
    h("h2", { id: "add-node-h" }, "Add a node"),
    h("p", "Run these on the machine that should earn DUCK. The node only ever dials out to this coordinator; it detects its CPU, RAM and GPUs, registers, stakes and starts leasing work."),
    h("form", { class: "form-grid", onsubmit: (e) => e.preventDefault(), "aria-label": "Node settings for the commands" },
      field("Name", inputs.name, "shown in the marketplace"),
      field("Price (DUCK per compute unit)", inputs.price),
      field("Task slots", inputs.slots, "tasks run at once"),
      field("Rental price (DUCK per hour)", inputs.pricePerHour, "0 = not for rent"),
      field("Region", inputs.region)),
    out);
}

// --- list ----------------------------------------------------------------------------

export async function renderList(ctx) {
  const toggle = h("button", { type: "button", class: "button primary", "aria-expanded": "false", "aria-controls": "add-node" }, "Add a node");
  const listBox = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading nodes…"));
  const summary = h("div");
  let minStake = 1000 * 1e6;
  try {
    minStake = (await api.get("/v1/stake/0x0000000000000000000000000000000000000000", { signal: ctx.signal })).min_stake;
  } catch {
    // keep the default
  }
  const panel = addNodePanel(minStake);
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    panel.hidden = !open;
    if (open) panel.querySelector("input")?.focus();
  });
  fill(ctx.root, pageHeader("Nodes", toggle), panel, summary, card("Provider nodes", listBox));
  if (ctx.query.get("add") === "1") toggle.click();

  const load = async () => {
    const nodes = await api.get("/v1/nodes", { signal: ctx.signal });
    for (const n of nodes) nodeNames.set(n.address.toLowerCase(), n.name);
    const online = nodes.filter((n) => n.status === "online");
    fill(summary, stats([
      ["Online", `${online.length}`, { hint: `of ${nodes.length} registered` }],
      ["CPU cores online", `${online.reduce((a, n) => a + n.hardware.cpu_cores, 0)}`],
      ["GPUs online", `${online.reduce((a, n) => a + n.hardware.gpus.length, 0)}`],
      ["Staked (effective)", duck(nodes.reduce((a, n) => a + n.stake, 0), { digits: 0 })],
    ], { "aria-label": "Node totals" }));
    let mine = null;
    const me = nodes.find((n) => isMe(n.address));
    if (me) mine = await api.get(`/v1/nodes/${me.address}/earnings`, { signal: ctx.signal }).catch(() => null);
    fill(listBox, table([
      { label: "Node", cell: (n) => h("div", h("a", { href: `#/nodes/${n.address}` }, n.name), h("div", { class: "mono muted" }, shortAddr(n.address))) },
      { label: "Status", cell: (n) => h("div", badge(n.status), h("div", { class: "muted small" }, `seen ${ago(n.last_seen_at)}`)) },
      { label: "Hardware", cell: (n) => hardwareText(n.hardware) },
      { label: "Price", cell: (n) => h("div", `${duck(n.price_per_unit)}/unit`, n.price_per_hour ? h("div", { class: "muted small" }, `${duck(n.price_per_hour)}/h to rent`) : null) },
      { label: "Reputation", cell: (n) => reputationCell(n.reputation) },
      { label: "Stake", cell: (n) => duck(n.stake, { digits: 0 }) },
      { label: "Tasks", cell: (n) => `${n.tasks_completed} done${n.tasks_failed ? `, ${n.tasks_failed} failed` : ""}` },
      { label: "Earnings", cell: (n) => (isMe(n.address) && mine ? h("a", { href: "#/wallet" }, `${duck(mine.total, { digits: 2 })} (yours)`) : h("span", { class: "muted", title: "private to the node's wallet" }, "private")) },
    ], nodes, { caption: "Provider nodes", empty: "No provider nodes yet. Use “Add a node” to start one." }));
  };
  ctx.onEvents({ types: ["node.*", "stake.*", "task.succeeded", "payment.settled"] }, throttle(() => load().catch(() => {}), 2000));
  ctx.every(15_000, () => load().catch(() => {}));
  await load();
}

// --- detail --------------------------------------------------------------------------

function earningsCard(e) {
  const bars = e.by_hour.map((b) => ({ label: time(b.hour).slice(0, 5), value: b.amount / 1e6, title: `${time(b.hour)}: ${duck(b.amount)}` }));
  return card("Earnings",
    stats([["Total", duck(e.total, { digits: 2 })], ["Last 24 h", duck(e.last_24h, { digits: 2 })], ["Payments", `${e.payments}`]], { "aria-label": "Earnings" }),
    barChart("DUCK earned per hour", bars, { yLabel: "DUCK", format: (v) => Number(v.toPrecision(3)).toString() }));
}

function notFound(ctx) {
  fill(ctx.root, pageHeader("Node not found"), alert("No node with this address is registered here.", "info"), h("p", h("a", { href: "#/nodes" }, "All nodes")));
}

export async function renderDetail(ctx) {
  const address = ctx.params.address;
  if (!/^0x[0-9a-fA-F]{40}$/.test(address)) return notFound(ctx);
  const node = await api.get(`/v1/nodes/${address}`, { signal: ctx.signal }).catch((err) => {
    if (err.status === 404) return null;
    throw err;
  });
  if (!node) return notFound(ctx);
  const [stake, slashes] = await Promise.all([
    api.get(`/v1/stake/${address}`, { signal: ctx.signal }).catch(() => null),
    api.get(`/v1/slashes?node=${address}`, { signal: ctx.signal }).catch(() => ({ slashes: [] })),
  ]);
  nodeNames.set(node.address.toLowerCase(), node.name);
  const activity = h("ol", { class: "feed", "aria-live": "polite", "aria-label": "Live activity of this node" },
    h("li", { class: "muted feed-empty" }, "Live activity appears here."));
  const earnings = h("div");
  const rep = node.reputation;
  fill(ctx.root,
    pageHeader(node.name, badge(node.status)),
    h("p", { class: "mono break" }, node.address),
    h("div", { class: "two-col" },
      card("Hardware and offer", facts([
        ["Hardware", hardwareText(node.hardware)],
        ["Platform", node.hardware.platform || "–"],
        ["Region", node.region || "–"],
        ["Price", `${duck(node.price_per_unit)} per compute unit`],
        ["Rental", node.price_per_hour ? `${duck(node.price_per_hour)} per hour${node.rental_id ? " (rented now)" : ""}` : "not for rent"],
        ["Slots", `${node.slots}`],
        ["Workloads", node.workloads.join(", ")],
        ["Registered", time(node.registered_at)],
        ["Last seen", ago(node.last_seen_at)],
      ])),
      card("Reputation",
        rep ? h("div", { class: "rep big" }, h("strong", { class: "rep-score" }, rep.score.toFixed(2)),
          h("div", { class: "rep-parts" }, meter("validity", rep.validity), meter("timeliness", rep.timeliness), meter("uptime", rep.uptime)),
          h("p", { class: "muted small" }, `score = 0.5·validity + 0.3·timeliness + 0.2·uptime · ${rep.results_valid} results won a check, ${rep.results_invalid} lost`))
          : h("p", { class: "muted" }, "No reputation yet."))),
    h("div", { class: "two-col" },
      card("Stake", stake ? facts([
        ["Effective", duck(stake.effective)],
        ["Staked", duck(stake.staked)],
        ["Unbonding", duck(stake.unbonding)],
        ["Minimum for paid work", duck(stake.min_stake)],
        ["Eligible", stake.eligible ? "yes" : "no: below the minimum"],
      ]) : h("p", { class: "muted" }, "unknown")),
      card("Slashes", table([
        { label: "When", cell: (s) => time(s.at) },
        { label: "Amount", cell: (s) => duck(s.amount) },
        { label: "Reason", cell: (s) => s.reason },
      ], slashes.slashes, { empty: "Never slashed." }))),
    node.datasets.length ? card("Datasets (shape only; the rows never leave the node)", table([
      { label: "Name", cell: (d) => d.name },
      { label: "Rows", cell: (d) => `${d.rows}` },
      { label: "Features", cell: (d) => `${d.features}` },
      { label: "Label", cell: (d) => d.label },
      { label: "Format", cell: (d) => d.format },
    ], node.datasets)) : null,
    earnings,
    card("Live activity", activity));

  if (isMe(node.address)) {
    const loadEarnings = async () => fill(earnings, earningsCard(await api.get(`/v1/nodes/${node.address}/earnings`, { signal: ctx.signal })));
    await loadEarnings().catch((err) => fill(earnings, alert(err.message)));
    ctx.onEvents({ node: node.address, types: ["payment.*", "rental.settled"] }, throttle(() => loadEarnings().catch(() => {}), 2000));
  } else {
    fill(earnings, h("p", { class: "muted" }, "Earnings are private: sign in as this node's wallet to see them."));
  }
  ctx.onEvents({ node: node.address }, (batch) => {
    activity.querySelector(".feed-empty")?.remove();
    for (const e of batch) activity.prepend(h("li", { class: "feed-item" }, h("time", time(e.at)), h("span", { class: "feed-text" }, describe(e))));
    while (activity.children.length > 30) activity.lastElementChild.remove();
  });
}
