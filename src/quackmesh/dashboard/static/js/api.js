// The coordinator's HTTP API from the browser: fetch with the session cookie, the CSRF
// header on every state-changing request, and problem+json errors turned into ApiError
// (whose message is the server's `detail`, meant to be shown to the user).
//
// Sign-in follows EIP-4361 (Sign-In with Ethereum): the server prepares the message with
// a fresh nonce, the injected wallet (window.ethereum) signs it with personal_sign, the
// server checks the signature and sets an HttpOnly, SameSite=Strict session cookie.

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", problem = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.problem = problem;
  }
}

const signedOut = { address: null, csrf_token: null, expires_at: null, method: null, dev_mode: false, dev_accounts: [] };

/** The current session as the server reported it (never holds a secret the page made). */
export const session = { ...signedOut };
const listeners = new Set();

/** fn(session) after every sign-in, sign-out or expiry; returns the unsubscribe function. */
export function onSessionChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function setSession(next) {
  const changed = next.address !== session.address;
  Object.assign(session, signedOut, next);
  if (changed) for (const fn of listeners) fn(session);
}

async function problemOf(res) {
  let problem = null;
  try {
    problem = await res.json();
  } catch {
    // not JSON (a proxy's error page): fall back to the status text
  }
  const detail = problem?.detail;
  const text = typeof detail === "string" ? detail
    : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
    : `${res.status} ${res.statusText || "error"}`;
  return new ApiError(text, { status: res.status, code: problem?.code || "", problem });
}

async function request(method, path, { body, json, signal, headers = {}, accept = "application/json" } = {}) {
  const init = { method, credentials: "same-origin", signal, headers: { Accept: accept, ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  if (method !== "GET" && session.csrf_token) init.headers["X-CSRF-Token"] = session.csrf_token;
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("the coordinator could not be reached", { code: "network" });
  }
  if (!res.ok) {
    const err = await problemOf(res);
    // A session that expired server-side: forget it so the page asks to sign in again.
    if (res.status === 401 && session.address) loadSession().catch(() => {});
    throw err;
  }
  return res;
}

export const api = {
  async get(path, opts) {
    const res = await request("GET", path, opts);
    return res.status === 204 ? null : res.json();
  },
  async text(path, opts) {
    const res = await request("GET", path, { ...opts, accept: "*/*" });
    return res.text();
  },
  async post(path, json = {}, opts) {
    const res = await request("POST", path, { ...opts, json });
    return res.status === 204 ? null : res.json();
  },
  /** Upload raw bytes (a File or Blob) as a content-addressed blob -> {sha256, size}. */
  async upload(file, opts) {
    const res = await request("POST", "/v1/blobs", {
      ...opts, body: file, headers: { "Content-Type": "application/octet-stream" },
    });
    return res.json();
  },
};

/** Build "path?a=1&b=2" from an object, skipping empty values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

export async function loadSession() {
  try {
    setSession(await api.get("/v1/auth/session"));
  } catch (err) {
    if (err.code === "network") throw err;
    setSession({}); // an older coordinator without browser sign-in: signed out
  }
  return session;
}

export async function signInDev(address) {
  setSession(await api.post("/v1/auth/dev", address ? { address } : {}));
  return session;
}

export async function signOut() {
  try {
    await api.post("/v1/auth/logout");
  } finally {
    setSession({ dev_mode: session.dev_mode, dev_accounts: session.dev_accounts });
    await loadSession().catch(() => {});
  }
}

export const hasInjectedWallet = () => typeof window.ethereum?.request === "function";

const utf8Hex = (text) =>
  `0x${Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("")}`;

/** EIP-4361 with the browser's wallet: ask for an account, sign the server's message. */
export async function signInWithWallet() {
  if (!hasInjectedWallet()) throw new ApiError("no browser wallet found (window.ethereum)");
  const eth = window.ethereum;
  const accounts = await eth.request({ method: "eth_requestAccounts" });
  const address = accounts?.[0];
  if (!address) throw new ApiError("the wallet shared no account");
  const challenge = await api.post("/v1/auth/challenge", { address });
  let signature;
  try {
    signature = await eth.request({ method: "personal_sign", params: [utf8Hex(challenge.message), address] });
  } catch (err) {
    throw new ApiError(err?.code === 4001 ? "you declined to sign the message" : `the wallet refused: ${err?.message || err}`);
  }
  setSession(await api.post("/v1/auth/siwe", { message: challenge.message, signature }));
  return session;
}
