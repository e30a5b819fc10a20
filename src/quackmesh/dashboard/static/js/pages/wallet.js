// Wallet: balance, stake (add / unbond), the wallet's ledger history, rentals, and for a
// provider its earnings. Private: signed out, only a sign-in prompt shows.

import { api, session } from "../api.js";
import { barChart } from "../charts.js";
import { field, fill, h, throttle } from "../dom.js";
import { duck, parseDuck, shortAccount, shortId, time } from "../format.js";
import { alert, badge, card, facts, pageHeader, signInPrompt, stats, table } from "../ui.js";

function amountForm(label, action, onDone) {
  const amount = h("input", { type: "text", inputmode: "decimal", placeholder: "100", required: true });
  const out = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "button" }, label);
  const form = h("form", { class: "inline-form", "aria-label": label }, field(`${label} (DUCK)`, amount), button, out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const micro = parseDuck(amount.value);
    if (!micro) return fill(out, alert("Enter a positive amount of DUCK."));
    button.disabled = true;
    try {
      await action(micro);
      amount.value = "";
      fill(out, alert(`${label}: done.`, "success"));
      onDone();
    } catch (err) {
      fill(out, alert(err.message));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export async function render(ctx) {
  if (!session.address) {
    fill(ctx.root, pageHeader("Wallet"), signInPrompt("Your balance, stake and payment history are shown only to you."));
    return;
  }
  const me = session.address;
  const balanceBox = h("div", { "aria-live": "polite" });
  const stakeBox = h("div");
  const earningsBox = h("div");
  const rentalsBox = h("div");
  const historyBox = h("div");
  const faucet = session.dev_mode
    ? h("button", {
      type: "button", class: "button",
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api.post("/v1/faucet", { amount: 100_000_000 });
          reload();
        } catch (err) {
          balanceBox.append(alert(err.message));
        } finally {
          e.target.disabled = false;
        }
      },
    }, "Get 100 test DUCK")
    : null;
  fill(ctx.root,
    pageHeader("Wallet", faucet),
    h("p", { class: "mono break" }, me, session.method === "dev" ? " (development sign-in)" : ""),
    balanceBox,
    h("div", { class: "two-col" },
      card("Stake", stakeBox,
        amountForm("Stake", (amount) => api.post("/v1/stake", { amount }), () => reload()),
        amountForm("Unstake", (amount) => api.post("/v1/stake/unstake", { amount }), () => reload())),
      card("Rentals", rentalsBox)),
    earningsBox,
    card("History", historyBox));

  const loadBalance = async () => {
    const b = await api.get("/v1/balance", { signal: ctx.signal });
    fill(balanceBox, stats([
      ["Available", duck(b.available), { key: "available" }],
      ["In escrow", duck(b.in_escrow), { key: "in_escrow", hint: "for running jobs and rentals" }],
      ["Staked", duck(b.staked), { key: "staked" }],
    ], { "aria-label": "Balance" }));
  };
  const loadStake = async () => {
    const s = await api.get(`/v1/stake/${me}`, { signal: ctx.signal });
    fill(stakeBox, facts([
      ["Effective", duck(s.effective)],
      ["Unbonding", duck(s.unbonding)],
      ["Minimum for providers", duck(s.min_stake)],
      ["Job priority", `${s.priority} (one level per stake step)`],
    ]), s.unbondings.length ? table([
      { label: "Amount", cell: (u) => duck(u.amount) },
      { label: "Released", cell: (u) => (u.state === "released" ? `released ${duck(u.released)}` : `at ${time(u.release_at)}`) },
    ], s.unbondings, { caption: "Unbonding" }) : null);
  };
  const loadRentals = async () => {
    const { rentals } = await api.get("/v1/rentals?limit=20", { signal: ctx.signal });
    fill(rentalsBox, table([
      { label: "Rental", cell: (r) => h("span", { class: "mono" }, shortId(r.id)) },
      { label: "State", cell: (r) => badge(r.state) },
      { label: "Nodes", cell: (r) => `${r.nodes.length}` },
      { label: "Escrowed", cell: (r) => duck(r.escrowed) },
      { label: "Paid", cell: (r) => duck(r.paid) },
      { label: "Ends", cell: (r) => time(r.ended_at || r.ends_at) },
      {
        label: "",
        cell: (r) => (r.state === "active" ? h("button", {
          type: "button", class: "button small", "aria-label": `Cancel rental ${r.id}`,
          onclick: async () => {
            try {
              await api.post(`/v1/rentals/${r.id}/cancel`);
            } catch (err) {
              rentalsBox.append(alert(err.message));
            }
            reload();
          },
        }, "Cancel") : ""),
      },
    ], rentals, { empty: "No rentals. Rent nodes in the Market." }));
  };
  const loadEarnings = async () => {
    try {
      await api.get(`/v1/nodes/${me}`, { signal: ctx.signal });
    } catch (err) {
      if (err.status === 404) return fill(earningsBox); // a client, not a provider node
      throw err;
    }
    const e = await api.get(`/v1/nodes/${me}/earnings`, { signal: ctx.signal });
    const bars = e.by_hour.map((b) => ({ label: time(b.hour).slice(0, 5), value: b.amount / 1e6, title: `${time(b.hour)}: ${duck(b.amount)}` }));
    fill(earningsBox, card("Earnings as a provider",
      stats([["Total", duck(e.total, { digits: 4 })], ["Last 24 h", duck(e.last_24h, { digits: 4 })], ["Payments", `${e.payments}`]], { "aria-label": "Earnings" }),
      barChart("DUCK earned per hour", bars, { yLabel: "DUCK", format: (v) => Number(v.toPrecision(3)).toString() })));
  };
  const loadHistory = async () => {
    const { entries } = await api.get("/v1/wallet/history?limit=100", { signal: ctx.signal });
    fill(historyBox, table([
      { label: "#", cell: (x) => `${x.seq}` },
      { label: "When", cell: (x) => time(x.at) },
      { label: "What", cell: (x) => x.memo },
      { label: "Account", cell: (x) => h("span", { class: "mono small", title: x.account }, shortAccount(x.account)) },
      { label: "Amount", class: "num", cell: (x) => h("span", { class: x.amount >= 0 ? "credit" : "debit" }, `${x.amount >= 0 ? "+" : ""}${duck(x.amount)}`) },
    ], entries, { caption: "Wallet history", empty: "No transactions yet." }));
  };
  const all = [loadBalance, loadStake, loadRentals, loadEarnings, loadHistory];
  const reload = () => Promise.all(all.map((f) => f().catch(() => {})));
  ctx.onEvents({ address: me }, throttle(reload, 1500));
  await Promise.all(all.map((f) => f().catch((err) => {
    if (err.name !== "AbortError") ctx.root.append(alert(err.message));
  })));
}
