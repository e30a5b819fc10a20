// Ledger: the public journal (newest first, each transaction's entries and chain hashes)
// and the server's re-check of the hash chain and the zero sum. Anyone may audit it;
// `quackmesh ledger verify --coordinator URL` does the same check without trusting us.

import { api, withQuery } from "../api.js";
import { fill, h, throttle } from "../dom.js";
import { duck, shortAccount, shortHash, time } from "../format.js";
import { alert, card, pageHeader, table } from "../ui.js";

const PAGE = 25;

function parseJournal(text) {
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

function checkView(c) {
  return h("div", { class: ["chain-check", c.ok ? "ok" : "bad"], "data-ok": String(c.ok) },
    h("p", { class: "chain-verdict" }, c.ok ? "✓ Hash chain intact and every account sums to zero" : "✗ The ledger check failed"),
    h("dl", { class: "facts" },
      h("div", h("dt", "Transactions"), h("dd", `${c.transactions}`)),
      h("div", h("dt", "Head hash"), h("dd", { class: "mono break" }, c.head || "–")),
      h("div", h("dt", "Sum of all balances"), h("dd", duck(c.total)))),
    c.problems.length ? h("ul", { class: "problems" }, c.problems.map((p) => h("li", p))) : null);
}

export async function render(ctx) {
  const checkBox = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Checking…"));
  const journalBox = h("div");
  const pager = h("div", { class: "pager" });
  const recheck = h("button", { type: "button", class: "button" }, "Re-check");
  fill(ctx.root,
    pageHeader("Ledger", recheck),
    h("p", { class: "muted" }, "Double-entry DUCK ledger: each transaction's entries sum to zero and carry the hash of the one before, so any change to history breaks the chain. The journal is public."),
    card("Hash-chain check", checkBox),
    card("Journal", journalBox, pager));

  let total = 0;
  let after = null; // null: the newest page
  const loadCheck = async () => {
    const c = await api.get("/v1/ledger/check", { signal: ctx.signal });
    total = c.transactions;
    fill(checkBox, checkView(c));
  };
  const loadJournal = async () => {
    const start = after ?? Math.max(0, total - PAGE);
    const txs = parseJournal(await api.text(withQuery("/v1/ledger/journal", { after: start, limit: PAGE }), { signal: ctx.signal }));
    txs.reverse();
    fill(journalBox, table([
      { label: "#", cell: (t) => `${t.seq}` },
      { label: "When", cell: (t) => time(t.created_at_us / 1e6) },
      { label: "Kind", cell: (t) => t.kind },
      { label: "Memo", cell: (t) => t.memo },
      { label: "Entries", cell: (t) => h("ul", { class: "entries" }, t.entries.map((e) => h("li", h("span", { class: "mono small", title: e.account }, shortAccount(e.account)), " ", h("span", { class: e.amount_micro >= 0 ? "credit" : "debit" }, `${e.amount_micro >= 0 ? "+" : ""}${duck(e.amount_micro)}`)))) },
      { label: "Hash", cell: (t) => h("span", { class: "mono small", title: `prev ${t.prev_hash}\nhash ${t.hash}` }, `${shortHash(t.prev_hash)} → ${shortHash(t.hash)}`) },
    ], txs, { caption: "Journal, newest first", empty: "No transactions yet." }));
    fill(pager,
      start > 0 ? h("button", { type: "button", class: "button", onclick: () => { after = Math.max(0, start - PAGE); loadJournal(); } }, "Older") : null,
      after !== null ? h("button", { type: "button", class: "button", onclick: () => { after = null; refresh(); } }, "Newest") : null,
      h("span", { class: "muted small" }, `${total} transactions`));
  };
  const refresh = async () => {
    try {
      await loadCheck();
      if (after === null) await loadJournal();
    } catch (err) {
      if (err.name !== "AbortError") fill(checkBox, alert(err.message));
    }
  };
  recheck.addEventListener("click", refresh);
  ctx.onEvents({ types: ["payment.*", "faucet.*", "stake.*", "job.*", "rental.*", "node.slashed"] }, throttle(refresh, 3000));
  await refresh();
}
