// The animated network view (canvas, our own code): the coordinator in the middle, the
// provider nodes on rings around it coloured by status, and pulses travelling along the
// edges as work and money flow — a lease goes out to a node, a result comes back, a
// payment goes out in gold. It redraws only while something moves, honours
// prefers-reduced-motion (pulses become a brief highlight), and describes itself in
// words (aria-label) for people who cannot see it.

const PULSE_MS = 1100;
const FLASH_MS = 900;
const FRESH_S = 5;

const EVENT_PULSES = {
  "task.leased": { dir: "out", kind: "task" },
  "task.succeeded": { dir: "in", kind: "result" },
  "task.failed": { dir: "in", kind: "fail" },
  "payment.settled": { dir: "out", kind: "pay" },
  "fl.round_started": { dir: "out", kind: "task" },
  "node.slashed": { dir: "in", kind: "fail" },
};

export class NetView {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.nodes = []; // [{address, name, status}]
    this.pulses = []; // [{node, dir, kind, start}]
    this.flashes = new Map(); // address -> start
    this.frame = null;
    this.reduced = matchMedia("(prefers-reduced-motion: reduce)").matches;
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(canvas.parentElement);
    this.colors = null;
    this.clockOffset = 0; // server clock − browser clock, seconds (set from /v1/stats)
  }

  destroy() {
    this.resize.disconnect();
    cancelAnimationFrame(this.frame);
    this.frame = null;
  }

  setNodes(nodes) {
    this.nodes = nodes.map((n) => ({ address: n.address, name: n.name, status: n.status }));
    const counts = { online: 0, draining: 0, offline: 0 };
    for (const n of this.nodes) counts[n.status] = (counts[n.status] || 0) + 1;
    this.canvas.setAttribute("aria-label",
      `Network view: the coordinator and ${this.nodes.length} provider nodes, ` +
      `${counts.online} online, ${counts.draining} draining, ${counts.offline} offline.`);
    this.draw();
  }

  /** Turn a batch of events into pulses along the edges (only fresh ones: a backlog
   * replayed after a reconnect is history, not traffic). */
  onEvents(batch) {
    const now = performance.now();
    const wall = Date.now() / 1000 + this.clockOffset;
    for (const e of batch) {
      if (!e.node || wall - e.at > FRESH_S) continue;
      const p = EVENT_PULSES[e.type];
      if (p) this.pulses.push({ node: e.node.toLowerCase(), ...p, start: now + this.pulses.length * 60 });
      if (e.type.startsWith("node.")) this.flashes.set(e.node.toLowerCase(), now);
    }
    if (this.pulses.length > 200) this.pulses.splice(0, this.pulses.length - 200);
    this.kick();
  }

  kick() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.tick());
  }

  tick() {
    this.frame = null;
    const now = performance.now();
    const span = this.reduced ? FLASH_MS : PULSE_MS;
    this.pulses = this.pulses.filter((p) => now - p.start < span);
    for (const [a, t] of this.flashes) if (now - t > FLASH_MS) this.flashes.delete(a);
    this.draw(now);
    if (this.pulses.length || this.flashes.size) this.kick();
  }

  readColors() {
    const css = getComputedStyle(this.canvas);
    const v = (name) => css.getPropertyValue(name).trim();
    this.colors = {
      bg: v("--net-bg"), edge: v("--net-edge"), text: v("--text"), muted: v("--muted"),
      online: v("--ok"), draining: v("--warn"), offline: v("--net-offline"),
      hub: v("--accent"), task: v("--info"), result: v("--ok"), pay: v("--gold"), fail: v("--bad"),
    };
  }

  layout(w, h) {
    const cx = w / 2;
    const cy = h / 2;
    const perRing = 12;
    const rings = Math.max(1, Math.ceil(this.nodes.length / perRing));
    // An ellipse that fills the canvas, leaving room for the labels.
    const rx = Math.max(40, w / 2 - 70);
    const ry = Math.max(40, h / 2 - 36);
    const pos = new Map();
    this.nodes.forEach((n, i) => {
      const ring = Math.floor(i / perRing);
      const inRing = Math.min(perRing, this.nodes.length - ring * perRing);
      const f = rings === 1 ? 1 : 0.55 + (0.45 * ring) / (rings - 1);
      const angle = -Math.PI / 2 + (((i % perRing) + 0.5) / inRing) * 2 * Math.PI + ring * 0.3;
      pos.set(n.address.toLowerCase(), { x: cx + f * rx * Math.cos(angle), y: cy + f * ry * Math.sin(angle), n });
    });
    return { cx, cy, pos };
  }

  draw(now = performance.now()) {
    const { canvas, ctx } = this;
    const box = canvas.parentElement.getBoundingClientRect();
    const w = Math.max(200, box.width);
    const hgt = Math.max(220, Math.min(420, w * 0.6));
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
      canvas.style.height = `${hgt}px`;
      this.colors = null;
    }
    if (!this.colors) this.readColors();
    const c = this.colors;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = c.bg;
    ctx.fillRect(0, 0, w, hgt);
    const { cx, cy, pos } = this.layout(w, hgt);
    ctx.lineWidth = 1.5;
    for (const { x, y, n } of pos.values()) {
      ctx.strokeStyle = c.edge;
      ctx.globalAlpha = n.status === "online" ? 1 : 0.45;
      ctx.beginPath();
      ctx.moveTo(cx, cy);
      ctx.lineTo(x, y);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    for (const p of this.pulses) {
      const at = pos.get(p.node);
      const t = (now - p.start) / PULSE_MS;
      if (!at || t < 0) continue;
      ctx.fillStyle = c[p.kind] || c.task;
      if (this.reduced) {
        ctx.strokeStyle = ctx.fillStyle;
        ctx.lineWidth = 3;
        ctx.beginPath();
        ctx.moveTo(cx, cy);
        ctx.lineTo(at.x, at.y);
        ctx.stroke();
        ctx.lineWidth = 1.5;
        continue;
      }
      const f = p.dir === "out" ? t : 1 - t;
      ctx.beginPath();
      ctx.arc(cx + (at.x - cx) * f, cy + (at.y - cy) * f, p.kind === "pay" ? 5 : 4, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    for (const { x, y, n } of pos.values()) {
      const flash = this.flashes.get(n.address.toLowerCase());
      if (flash !== undefined) {
        const t = (now - flash) / FLASH_MS;
        ctx.strokeStyle = c[n.status] || c.offline;
        ctx.globalAlpha = Math.max(0, 1 - t);
        ctx.beginPath();
        ctx.arc(x, y, 11 + 10 * t, 0, 2 * Math.PI);
        ctx.stroke();
        ctx.globalAlpha = 1;
      }
      ctx.fillStyle = c[n.status] || c.offline;
      ctx.beginPath();
      ctx.arc(x, y, 9, 0, 2 * Math.PI);
      ctx.fill();
      ctx.fillStyle = c.text;
      ctx.fillText(n.name.length > 16 ? `${n.name.slice(0, 15)}…` : n.name, x, y + 24);
    }
    ctx.fillStyle = c.hub;
    ctx.beginPath();
    ctx.arc(cx, cy, 16, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = c.text;
    ctx.fillText("coordinator", cx, cy + 32);
    if (!this.nodes.length) {
      ctx.fillStyle = c.muted;
      ctx.fillText("no provider nodes yet — see Nodes › Add a node", cx, cy - 30);
    }
  }
}
