// Sign in: EIP-4361 with the browser's injected wallet (MetaMask and friends) when there
// is one; on a development coordinator also a one-click sign-in as a local demo account.

import { hasInjectedWallet, session, signInDev, signInWithWallet, signOut } from "../api.js";
import { field, fill, h, select } from "../dom.js";
import { shortAddr } from "../format.js";
import { navigate } from "../router.js";
import { alert, card, pageHeader } from "../ui.js";

function next(ctx) {
  const target = ctx.query.get("next") || "wallet";
  // Only our own hash routes: never an absolute URL from the query string.
  return /^[\w/.?=&%-]*$/.test(target) && !target.startsWith("signin") ? target : "wallet";
}

export async function render(ctx) {
  if (session.address) {
    fill(ctx.root, pageHeader("Signed in"),
      card("Session",
        h("p", "You are signed in as ", h("span", { class: "mono break" }, session.address), session.method === "dev" ? " (development sign-in)." : " (Sign-In with Ethereum)."),
        h("p", h("a", { class: "button primary", href: `#/${next(ctx)}` }, "Continue"), " ",
          h("button", { type: "button", class: "button", onclick: () => signOut() }, "Sign out"))));
    return;
  }
  const walletOut = h("div", { "aria-live": "polite" });
  const walletButton = h("button", { type: "button", class: "button primary" }, "Sign in with wallet");
  walletButton.addEventListener("click", async () => {
    walletButton.disabled = true;
    fill(walletOut, alert("Check your wallet: it asks you to sign a sign-in message (no transaction, no fee).", "info"));
    try {
      await signInWithWallet();
      navigate(next(ctx));
    } catch (err) {
      fill(walletOut, alert(err.message));
    } finally {
      walletButton.disabled = false;
    }
  });
  const walletCard = card("Sign in with Ethereum",
    h("p", "Your wallet signs a one-time EIP-4361 message from this coordinator; nothing is sent on chain and your key never leaves the wallet."),
    hasInjectedWallet()
      ? h("p", walletButton)
      : h("p", { class: "muted" }, "No browser wallet found. Install a wallet extension such as MetaMask, then reload this page."),
    walletOut);

  let devCard = null;
  if (session.dev_mode) {
    const accounts = session.dev_accounts || [];
    const choice = select([["", "a fresh development account"], ...accounts.map((a) => [a.address, `${a.label} (${shortAddr(a.address)})`])],
      { value: accounts[0]?.address || "" });
    const devOut = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "inline-form", "aria-label": "Development sign-in" },
      field("Account", choice),
      h("button", { type: "submit", class: "button" }, "Development sign-in"),
      devOut);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await signInDev(choice.value || undefined);
        navigate(next(ctx));
      } catch (err) {
        fill(devOut, alert(err.message));
      }
    });
    devCard = card("Development sign-in",
      h("p", { class: "muted" }, "This coordinator runs in development mode, so you can sign in as a local demo account without a wallet. A production coordinator never offers this."),
      form);
  }
  fill(ctx.root, pageHeader("Sign in"), h("div", { class: "two-col" }, walletCard, devCard));
}
