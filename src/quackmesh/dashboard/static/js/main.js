// Boot: read the session, open the event stream, draw the header and route.

import { api, loadSession, onSessionChange, session, signOut } from "./api.js";
import { fill, h } from "./dom.js";
import { events } from "./events.js";
import { shortAddr } from "./format.js";
import * as jobPage from "./pages/job.js";
import * as jobsPage from "./pages/jobs.js";
import * as ledgerPage from "./pages/ledger.js";
import * as marketPage from "./pages/market.js";
import { renderDetail as nodeDetail, renderList as nodeList } from "./pages/nodes.js";
import * as overviewPage from "./pages/overview.js";
import * as signinPage from "./pages/signin.js";
import * as walletPage from "./pages/wallet.js";
import { render, route, startRouter } from "./router.js";

route("", "Overview", overviewPage.render);
route("nodes", "Nodes", nodeList);
route("nodes/:address", "Node", nodeDetail);
route("market", "Marketplace", marketPage.render);
route("jobs", "Jobs", jobsPage.render);
route("jobs/:id", "Job", jobPage.render);
route("wallet", "Wallet", walletPage.render);
route("ledger", "Ledger", ledgerPage.render);
route("signin", "Sign in", signinPage.render);

function drawSession() {
  const box = document.getElementById("session");
  if (session.address) {
    fill(box,
      h("a", { class: "who", href: "#/wallet", title: session.address },
        h("span", { class: "sr-only" }, "Signed in as "), h("span", { class: "mono" }, shortAddr(session.address)),
        session.method === "dev" ? h("span", { class: "badge tone-warn" }, "dev") : null),
      h("button", { type: "button", class: "button small", onclick: () => signOut() }, "Sign out"));
  } else {
    fill(box, h("a", { class: "button small primary", href: `#/signin?next=${encodeURIComponent(location.hash.replace(/^#\/?/, "") || "wallet")}` }, "Sign in"));
  }
}

const LIVE_TEXT = {
  idle: "Event stream idle",
  connecting: "Connecting to the event stream…",
  live: "Live: updates stream in as they happen",
  reconnecting: "Event stream lost, reconnecting…",
  polling: "Live updates by polling (WebSocket unavailable)",
};

async function boot() {
  const status = document.getElementById("live-status");
  events.onStatus((state) => {
    status.textContent = LIVE_TEXT[state] || state;
    status.dataset.state = state;
  });
  try {
    await loadSession();
  } catch (err) {
    fill(document.getElementById("main"), h("p", { class: "alert error", role: "alert" }, `Cannot reach the coordinator: ${err.message}. Reload to try again.`));
    return;
  }
  drawSession();
  onSessionChange(() => {
    drawSession();
    events.restart(); // the server projects events for the new viewer
    render({ focus: false });
  });
  let head = 0;
  try {
    head = (await api.get("/v1/stats")).head_event || 0;
  } catch {
    // start from the beginning of the log
  }
  events.start(Math.max(0, head - 60)); // a little history for the overview feed
  await startRouter();
  window.addEventListener("hashchange", () => {
    if (!session.address) drawSession(); // keep the sign-in link's "next" current
  });
}

boot();
