// Job detail: state, money, the task timeline with each task's payment state, the job's
// events, the result with a download; for federated jobs the loss/accuracy chart per
// round, ε spent and contribution shares. Everything updates live from the event stream.

import { api, session, withQuery } from "../api.js";
import { lineChart, onBreakpoint } from "../charts.js";
import { fill, h, throttle } from "../dom.js";
import { describe, nodeLabel, nodeNames } from "../eventtext.js";
import { events } from "../events.js";
import { duck, duration, num, pct, shortHash, time } from "../format.js";
import { alert, badge, card, facts, pageHeader, signInPrompt, stats, table } from "../ui.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function summary(job) {
  return facts([
    ["Kind", job.kind],
    ["State", badge(job.state)],
    ["Verification", job.verification.policy + (job.verification.replicas > 1 ? ` (${job.verification.replicas} replicas)` : "")],
    ["Submitted", time(job.created_at)],
    ["Completed", job.completed_at ? `${time(job.completed_at)} (${duration(job.completed_at - job.created_at)})` : "–"],
    ["Compute units", `${job.units}`],
    ["Max price", `${duck(job.max_price)} per unit`],
    ["Escrowed", duck(job.escrowed)],
    ["Paid", `${duck(job.paid)} (fee ${duck(job.fee)})`],
    ["Refunded", duck(job.refunded)],
    job.rental_id ? ["Rental", job.rental_id] : null,
    job.error ? ["Error", h("span", { class: "error-text" }, job.error)] : null,
  ]);
}

function taskTimeline(tasks) {
  if (!tasks.length) return h("p", { class: "muted" }, "No tasks yet.");
  return h("ol", { class: "timeline", "aria-label": "Tasks" }, tasks.map((t) =>
    h("li", { class: ["timeline-item", `state-${t.state}`], "data-task": t.id },
      h("div", { class: "timeline-head" },
        h("strong", t.role), " on ", t.node ? h("a", { href: `#/nodes/${t.node}` }, nodeLabel(t.node)) : h("span", { class: "muted" }, "no node yet"),
        " ", badge(t.state)),
      h("div", { class: "timeline-body" },
        h("span", `leased ${time(t.leased_at)}`), " → ", h("span", `finished ${time(t.finished_at)}`),
        t.leased_at && t.finished_at ? h("span", { class: "muted" }, ` (${duration(t.finished_at - t.leased_at)})`) : null),
      h("div", { class: "timeline-pay" },
        "verdict ", badge(t.verdict), " · payment ", h("span", { class: "payment-state" }, badge(t.payment_state)),
        t.paid ? ` ${duck(t.paid)}` : "",
        t.payment_tx ? h("span", { class: "mono muted" }, ` tx ${shortHash(t.payment_tx)}`) : null),
      t.failures.length ? h("ul", { class: "failures" }, t.failures.map((f) => h("li", `${nodeLabel(f.node)}: ${f.reason} — ${f.detail}`))) : null)));
}

function resultSection(job, result) {
  const text = JSON.stringify(result.result, null, 2);
  const href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const lines = text.split("\n");
  const preview = lines.length > 30 ? `${lines.slice(0, 30).join("\n")}\n…` : text;
  return card("Result",
    h("p", h("a", { class: "button primary download", href, download: `${job.id}-result.json` }, "Download result (JSON)"),
      " ", h("span", { class: "mono muted small" }, `sha256 ${shortHash(result.output_sha256)}`)),
    h("pre", { class: "result", tabindex: "0", "aria-label": "Result preview" }, preview));
}

// --- federated -----------------------------------------------------------------------

function flSection(job, run) {
  const rounds = run.history;
  const pts = (key) => rounds.map((r) => [r.round, r[key]]);
  const lossChart = lineChart("Loss per round", [
    { name: "holdout loss", points: pts("loss") },
    { name: "federated loss", points: pts("fed_loss") },
  ], { xLabel: "round", yLabel: "loss" });
  const accChart = lineChart("Accuracy per round", [
    { name: "holdout accuracy", points: pts("accuracy") },
    { name: "federated accuracy", points: pts("fed_accuracy") },
  ], { xLabel: "round", yLabel: "accuracy", yDomain: [0, 1] });
  // Contribution: each node's share of the rewards paid so far.
  const byNode = new Map();
  for (const r of rounds) for (const c of r.clients) byNode.set(c.node, (byNode.get(c.node) || 0) + c.reward);
  const totalReward = [...byNode.values()].reduce((a, b) => a + b, 0);
  const shares = [...byNode.entries()].sort((a, b) => b[1] - a[1]);
  const last = rounds[rounds.length - 1];
  const done = FINAL.has(run.state);
  return h("section", { class: "fl", "aria-labelledby": "fl-h" },
    h("h2", { id: "fl-h" }, "Federated training"),
    stats([
      ["Round", done ? `${rounds.length} of ${run.rounds}` : `${Math.min(run.round, run.rounds)} of ${run.rounds}`, { key: "round", hint: done ? run.stop_reason || run.state : run.phase }],
      ["Holdout accuracy", last ? pct(last.accuracy, 1) : "–", { key: "accuracy" }],
      ["ε spent", run.epsilon === null ? "no DP" : num(run.epsilon, 2), { key: "epsilon" }],
      ["Rewards paid", duck(run.reward_paid, { digits: 4 }), { hint: `compute ${duck(run.compute_paid, { digits: 4 })}` }],
    ], { "aria-label": "Training progress" }),
    h("div", { class: "two-col charts", "data-rounds": rounds.length }, lossChart, accChart),
    h("div", { class: "two-col" },
      card("Contribution shares", shares.length ? h("ul", { class: "shares" }, shares.map(([node, reward]) => {
        const share = totalReward ? reward / totalReward : 0;
        const bar = h("span", { class: "share-fill" });
        bar.style.width = `${(share * 100).toFixed(1)}%`;
        return h("li", h("span", { class: "share-name" }, nodeLabel(node)), h("span", { class: "share-track", "aria-hidden": "true" }, bar), h("span", { class: "share-value" }, `${pct(share, 1)} · ${duck(reward, { digits: 4 })}`));
      })) : h("p", { class: "muted" }, "No rewards yet.")),
      card("Model", done && job.state === "succeeded"
        ? h("p", h("a", { class: "button", href: `/v1/fl/jobs/${job.id}/model`, download: `${job.id}.safetensors` }, "Download model (safetensors)"), " ",
          h("a", { class: "button", href: `/v1/fl/jobs/${job.id}/card`, target: "_blank", rel: "noopener" }, "Model card (JSON)"))
        : h("p", { class: "muted" }, `Global model ${shortHash(run.model_sha256)}; the final model downloads here when training succeeds.`))),
    card("Rounds", table([
      { label: "Round", cell: (r) => `${r.round}` },
      { label: "Clients", cell: (r) => `${r.participants}${r.dropped ? ` (${r.dropped} dropped)` : ""}` },
      { label: "Loss", cell: (r) => num(r.loss) },
      { label: "Accuracy", cell: (r) => pct(r.accuracy, 1) },
      { label: "Fed. accuracy", cell: (r) => pct(r.fed_accuracy, 1) },
      { label: "ε", cell: (r) => num(r.epsilon, 2) },
      { label: "Reward", cell: (r) => duck(r.reward, { digits: 4 }) },
      { label: "Time", cell: (r) => duration(r.finished_at - r.started_at) },
    ], rounds, { caption: "Rounds", empty: "The first round is under way." })));
}

// --- page ----------------------------------------------------------------------------

export async function render(ctx) {
  const id = ctx.params.id;
  if (!session.address) {
    fill(ctx.root, pageHeader("Job"), signInPrompt("A job, its data and its result are visible only to the wallet that submitted it."));
    return;
  }
  const notFound = () => fill(ctx.root, pageHeader("Job not found"), alert("No job with this id belongs to your wallet.", "info"));
  if (!/^[\w-]{1,64}$/.test(id)) return notFound();
  const stateLine = h("p", { class: "job-state", role: "status" });
  const head = h("div", pageHeader(`Job ${id}`), stateLine);
  const main = h("div");
  const fl = h("div");
  const result = h("div");
  const feed = h("ol", { class: "feed", "aria-label": "Job events" });
  const actions = h("div", { class: "actions" });
  fill(ctx.root, head, actions, main, fl, result, card("Events", feed));
  let job = null;
  let lastRun = null;
  let resultShown = false;
  ctx.onCleanup(onBreakpoint(() => lastRun && fill(fl, flSection(job, lastRun))));

  const load = async () => {
    job = await api.get(`/v1/jobs/${id}`, { signal: ctx.signal });
    fill(stateLine, "State: ", badge(job.state), job.error ? ` — ${job.error}` : "");
    fill(main, h("div", { class: "two-col" }, card("Summary", summary(job)), card("Tasks", taskTimeline(job.tasks))));
    fill(actions,
      !FINAL.has(job.state) ? h("button", { type: "button", class: "button", onclick: cancel }, "Cancel job") : null,
      job.state === "queued" ? h("button", { type: "button", class: "button", onclick: explain }, "Why is it waiting?") : null,
      h("div", { class: "explain-box", "aria-live": "polite" }));
    if (job.kind === "fl.train") {
      if (fl.nextSibling !== main) ctx.root.insertBefore(fl, main); // training progress first
      lastRun = await api.get(`/v1/fl/jobs/${id}`, { signal: ctx.signal });
      fill(fl, flSection(job, lastRun));
    }
    if (job.state === "succeeded" && !resultShown && job.kind !== "fl.train") {
      resultShown = true;
      const res = await api.get(`/v1/jobs/${id}/result`, { signal: ctx.signal });
      fill(result, resultSection(job, res));
    }
  };
  const cancel = async () => {
    try {
      await api.post(`/v1/jobs/${id}/cancel`);
      await load();
    } catch (err) {
      actions.append(alert(err.message));
    }
  };
  const explain = async () => {
    const box = actions.querySelector(".explain-box");
    try {
      const why = await api.get(`/v1/jobs/${id}/explain`);
      fill(box, h("p", why.summary), ...why.tasks.map((t) => table([
        { label: "Node", cell: (c) => c.name || nodeLabel(c.node) },
        { label: "Eligible", cell: (c) => (c.eligible ? "yes" : "no") },
        { label: "Reason", cell: (c) => c.reason || "–" },
        { label: "Detail", cell: (c) => c.detail },
      ], t.candidates, { caption: `Task ${t.task_id}` })));
    } catch (err) {
      fill(box, alert(err.message));
    }
  };

  try {
    const nodes = await api.get("/v1/nodes", { signal: ctx.signal });
    for (const n of nodes) nodeNames.set(n.address.toLowerCase(), n.name);
  } catch {
    // addresses then show shortened
  }
  try {
    await load();
  } catch (err) {
    if (err.status === 404) return notFound();
    throw err;
  }
  const seen = new Set();
  const addEvents = (batch) => {
    for (const e of batch.filter((x) => !seen.has(x.id) && seen.add(x.id))) feed.prepend(h("li", { class: "feed-item" }, h("time", time(e.at)), h("span", { class: "feed-type" }, e.type), h("span", { class: "feed-text" }, describe(e))));
  };
  try {
    addEvents(await api.get(withQuery("/v1/events", { job: id, limit: 500 }), { signal: ctx.signal }));
  } catch {
    // older coordinator without event filters: only live events are listed
  }
  const refresh = throttle(() => load().catch(() => {}), 700);
  ctx.onEvents({ job: id }, (batch) => {
    addEvents(batch);
    refresh();
  });
  // Safety net while the event stream is down (it resumes without gaps when back).
  ctx.every(5000, () => {
    if (!events.live && job && !FINAL.has(job.state)) refresh();
  });
}
