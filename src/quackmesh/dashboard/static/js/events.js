// The live event stream: one WebSocket to /v1/events/ws for the whole page.
//
// The server sends {"events": [...]} frames: the backlog after `after`, then live events.
// On a dropped connection we reconnect with after=<last id seen> (exponential backoff,
// capped), so nothing is missed and, since ids only grow, nothing is delivered twice.
// The viewer is whoever the session cookie names: after signing in or out the socket is
// reopened so the server projects events for the new viewer. If the socket cannot be
// opened at all (a proxy that blocks WebSockets), the stream falls back to polling
// GET /v1/events with the same resume rule.

import { api, withQuery } from "./api.js";

const MAX_BACKOFF_MS = 4000;
const KEEP = 200; // recent events kept for pages that open later (the overview feed)

class EventStream {
  constructor() {
    this.lastId = 0;
    this.recent = [];
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.state = "idle"; // idle | connecting | live | reconnecting | polling
    this.ws = null;
    this.backoff = 500;
    this.failuresBeforeOpen = 0;
    this.timer = null;
  }

  /** fn(events) for every batch of new events; returns the unsubscribe function. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn) {
    this.statusListeners.add(fn);
    fn(this.state);
    return () => this.statusListeners.delete(fn);
  }

  get live() {
    return this.state === "live" || this.state === "polling";
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    for (const fn of this.statusListeners) fn(state);
  }

  start(after) {
    this.lastId = Math.max(0, after | 0);
    this.connect();
  }

  /** Reopen for a new viewer, resuming where we are. */
  restart() {
    this.stop();
    this.connect();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
  }

  deliver(events) {
    const fresh = (events || []).filter((e) => e.id > this.lastId).sort((a, b) => a.id - b.id);
    if (!fresh.length) return;
    this.lastId = fresh[fresh.length - 1].id;
    this.recent.push(...fresh);
    if (this.recent.length > KEEP) this.recent.splice(0, this.recent.length - KEEP);
    for (const fn of this.listeners) {
      try {
        fn(fresh);
      } catch (err) {
        console.error("event listener failed", err);
      }
    }
  }

  connect() {
    if (this.failuresBeforeOpen >= 3) return this.poll();
    this.setState(this.state === "idle" ? "connecting" : "reconnecting");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}${withQuery("/v1/events/ws", { after: this.lastId })}`);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.backoff = 500;
      this.failuresBeforeOpen = 0;
      this.setState("live");
    };
    ws.onmessage = (msg) => {
      try {
        this.deliver(JSON.parse(msg.data).events);
      } catch (err) {
        console.error("bad event frame", err);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return; // closed on purpose (restart/stop)
      this.ws = null;
      if (!opened) this.failuresBeforeOpen += 1;
      this.setState("reconnecting");
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    };
  }

  async poll() {
    this.setState("polling");
    try {
      this.deliver(await api.get(withQuery("/v1/events", { after: this.lastId, limit: 500 })));
    } catch {
      // try again on the next tick
    }
    this.timer = setTimeout(() => this.poll(), 2000);
  }
}

export const events = new EventStream();

/** Does the event match {job, node, address, types: ["job.*", "task.leased"]}? */
export function matches(e, { job, node, address, types } = {}) {
  if (job && e.job_id !== job) return false;
  if (node && e.node?.toLowerCase() !== node.toLowerCase()) return false;
  if (address) {
    const a = address.toLowerCase();
    if (e.address?.toLowerCase() !== a && e.node?.toLowerCase() !== a) return false;
  }
  if (types?.length) {
    return types.some((t) => (t.endsWith(".*") ? e.type.startsWith(t.slice(0, -1)) : e.type === t));
  }
  return true;
}
