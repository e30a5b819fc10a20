// Formatting for display. Amounts are integers of micro-DUCK (6 decimals) everywhere in the
// API; they are formatted with BigInt so no float ever rounds a balance.

const UNIT = 1_000_000n;

/** 1500000 -> "1.5 DUCK"; digits caps the decimals shown (rounded toward zero). */
export function duck(micro, { digits = 6, symbol = true } = {}) {
  if (micro === null || micro === undefined) return "–";
  const n = BigInt(Math.trunc(Number(micro)));
  const sign = n < 0n ? "-" : "";
  const abs = n < 0n ? -n : n;
  const whole = (abs / UNIT).toLocaleString("en-US");
  let frac = (abs % UNIT).toString().padStart(6, "0").slice(0, digits).replace(/0+$/, "");
  const text = `${sign}${whole}${frac ? `.${frac}` : ""}`;
  return symbol ? `${text} DUCK` : text;
}

/** "0.05" (DUCK as typed) -> 50000 micro-DUCK, or null if it is not a decimal amount. */
export function parseDuck(text) {
  const m = /^\s*(\d+)(?:\.(\d{0,6}))?\s*$/.exec(String(text));
  if (!m) return null;
  return Number(BigInt(m[1]) * UNIT + BigInt((m[2] || "").padEnd(6, "0")));
}

export const shortAddr = (a) => (a ? `${a.slice(0, 6)}…${a.slice(-4)}` : "–");
/** "wallet:0x4F37…3473" for "wallet:0x4F370E…43473" (ledger account names). */
export const shortAccount = (account) => account.replace(/0x[0-9a-fA-F]{40}/g, (a) => shortAddr(a));
export const shortId = (id) => (id ? (id.length > 16 ? `${id.slice(0, 14)}…` : id) : "–");
export const shortHash = (h) => (h ? `${h.slice(0, 10)}…` : "–");

export function gib(bytes) {
  const g = bytes / 2 ** 30;
  return `${g >= 10 ? g.toFixed(0) : g.toFixed(1)} GiB`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 2 ** 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 2 ** 30) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return gib(n);
}

export const pct = (x, digits = 0) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)} %`);
export const num = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

/** Unix seconds -> "14:03:07" today, else "2024-05-01 14:03". */
export function time(ts) {
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  const now = new Date();
  const hms = d.toLocaleTimeString("en-GB", { hour12: false });
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.toISOString().slice(0, 10)} ${hms.slice(0, 5)}`;
}

/** Unix seconds -> "12 s ago" / "3 min ago" / "2 h ago". */
export function ago(ts, now = Date.now() / 1000) {
  if (!ts) return "never";
  const s = Math.max(0, Math.round(now - ts));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.round(seconds / 60)} min`;
}
