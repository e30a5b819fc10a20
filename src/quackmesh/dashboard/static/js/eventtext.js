// One line of plain English per event, for the feed and the job timeline. Others' events
// arrive as a public projection (no address, little data); their job ids are not shown.

import { session } from "./api.js";
import { duck, shortAddr, shortId } from "./format.js";

/** Node names by address (lower case), filled by pages that load the node list. */
export const nodeNames = new Map();

export function nodeLabel(address) {
  if (!address) return "a node";
  return nodeNames.get(address.toLowerCase()) || shortAddr(address);
}

const own = (e) => Boolean(session.address && e.address && e.address.toLowerCase() === session.address.toLowerCase());

function jobRef(e) {
  const kind = e.data?.kind ? ` (${e.data.kind})` : "";
  return own(e) ? `your job ${shortId(e.job_id)}${kind}` : `a job${kind}`;
}

export function describe(e) {
  const d = e.data || {};
  const node = nodeLabel(e.node);
  switch (e.type) {
    case "node.registered": return `${d.name || node} joined the network`;
    case "node.online": return `${node} is online`;
    case "node.offline": return `${node} went offline`;
    case "node.draining": return `${node} is draining`;
    case "node.slashed": return `${node} was slashed${d.amount ? ` ${duck(d.amount)}` : ""}`;
    case "job.submitted": return `${jobRef(e)} was submitted`;
    case "job.running": return `${jobRef(e)} is running`;
    case "job.checking": return `${jobRef(e)}: result being checked`;
    case "job.replicating": return `${jobRef(e)}: running extra replicas`;
    case "job.succeeded": return `${jobRef(e)} succeeded`;
    case "job.failed": return `${jobRef(e)} failed${own(e) && d.error ? `: ${d.error}` : ""}`;
    case "job.cancelled": return `${jobRef(e)} was cancelled`;
    case "job.suspect": return `${jobRef(e)} may have a bad result (dispute it)`;
    case "task.queued": return `a task was queued${d.role && d.role !== "primary" ? ` (${d.role})` : ""}`;
    case "task.leased": return `${node} leased a task`;
    case "task.succeeded": return `${node} finished a task`;
    case "task.failed": return `${node} failed a task${d.reason ? ` (${d.reason})` : ""}`;
    case "task.requeued": return "a task went back to the queue";
    case "task.released": return `${node} handed a task back`;
    case "payment.settled": return `${node} was paid ${duck(d.amount)}`;
    case "fl.round_started": return `federated round ${d.round ?? ""} started`;
    case "fl.round_finished": return `federated round ${d.round ?? ""} finished`;
    case "fl.client_dropped": return `${node} dropped out of a federated round`;
    case "fl.round_retry": return `federated round ${d.round ?? ""} is retried`;
    case "rental.started": return own(e) ? "your rental started" : `a rental started`;
    case "rental.settled": return `${node} was paid for rented time`;
    case "rental.ended": return "a rental ended";
    case "rental.cancelled": return "a rental was cancelled";
    case "stake.added": return `${node} staked${d.amount ? ` ${duck(d.amount)}` : ""}`;
    case "stake.unbonding": return `${node} started unbonding${d.amount ? ` ${duck(d.amount)}` : ""}`;
    case "stake.released": return `${node} got unbonded stake back`;
    case "faucet.minted": return own(e) ? `you got ${duck(d.amount)} from the faucet` : "test DUCK were minted";
    case "blob.uploaded": return own(e) ? "you uploaded a file" : "a file was uploaded";
    default:
      if (e.type.startsWith("dispute.")) return `a dispute: ${e.type.slice(8)}`;
      return e.type;
  }
}

/** The feed's category (colour) for an event type. */
export function category(type) {
  if (type.startsWith("payment.") || type.startsWith("rental.settled") || type === "faucet.minted") return "pay";
  if (type.endsWith("failed") || type.endsWith("slashed") || type.endsWith("offline") || type.endsWith("suspect")) return "bad";
  if (type.endsWith("succeeded") || type.endsWith("online") || type.endsWith("registered")) return "ok";
  return "info";
}
