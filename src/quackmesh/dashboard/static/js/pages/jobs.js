// Jobs: the signed-in client's jobs (live) and a form that uploads a data file and
// submits a classic ML job. Jobs are private: signed out, only a sign-in prompt shows.

import { api, session } from "../api.js";
import { field, fill, h, select, throttle } from "../dom.js";
import { ago, bytes, duck, parseDuck, shortId } from "../format.js";
import { navigate } from "../router.js";
import { alert, badge, card, pageHeader, signInPrompt, table } from "../ui.js";

// Parameters to start from, per kind (see the README's workload table).
const EXAMPLES = {
  "ml.kmeans": { n_clusters: 3, seed: 42 },
  "ml.linear_regression": { target: "target" },
  "ml.pca": { n_components: 2 },
};

function submitForm(kinds) {
  const kind = select(kinds.map((k) => [k, k]), { value: kinds.includes("ml.kmeans") ? "ml.kmeans" : kinds[0], required: true });
  const file = h("input", { type: "file", accept: ".csv,.parquet,.npz", required: true });
  const params = h("textarea", { rows: 3, spellcheck: "false", class: "mono" });
  const maxPrice = h("input", { type: "text", inputmode: "decimal", value: "0.05", required: true });
  const policy = select([["none", "none: one node, trusted"], ["adaptive", "adaptive: spot-check untrusted nodes"], ["redundant", "redundant: 3 replicas, majority"], ["honeypot", "honeypot: known-answer checks"]], { value: "none" });
  const progress = h("div", { class: "progress", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "button primary" }, "Submit job");
  const setExample = () => (params.value = JSON.stringify(EXAMPLES[kind.value] || {}));
  kind.addEventListener("change", setExample);
  setExample();
  const form = h("form", { class: "form-grid submit-job", "aria-label": "Submit a job" },
    field("Kind", kind),
    field("Data file", file, "CSV with a header row, Parquet, or NPZ"),
    field("Parameters (JSON)", params, "e.g. {\"n_clusters\": 3}"),
    field("Max price (DUCK per compute unit)", maxPrice, "escrowed: max price × units × replicas"),
    field("Verification", policy),
    h("div", { class: "form-actions" }, button),
    progress);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(params.value || "{}");
    } catch (err) {
      return fill(progress, alert(`Parameters are not valid JSON: ${err.message}`));
    }
    const price = parseDuck(maxPrice.value);
    if (!price) return fill(progress, alert("Max price must be a positive amount of DUCK, e.g. 0.05"));
    const data = file.files[0];
    if (!data) return fill(progress, alert("Choose a data file to upload."));
    button.disabled = true;
    try {
      fill(progress, alert(`Uploading ${data.name} (${bytes(data.size)})…`, "info"));
      const blob = await api.upload(data);
      fill(progress, alert("Submitting…", "info"));
      const job = await api.post("/v1/jobs", {
        kind: kind.value, params: parsed, inputs: { data: blob.sha256 }, max_price: price,
        verification: { policy: policy.value },
      });
      navigate(`jobs/${job.id}`);
    } catch (err) {
      fill(progress, alert(err.message));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export async function render(ctx) {
  if (!session.address) {
    fill(ctx.root, pageHeader("Jobs"), signInPrompt("Jobs, their data and results are visible only to the wallet that submitted them."));
    return;
  }
  const listBox = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading your jobs…"));
  let kinds = ["ml.kmeans", "ml.linear_regression", "ml.pca"];
  try {
    const nodes = await api.get("/v1/nodes", { signal: ctx.signal });
    const offered = [...new Set(nodes.flatMap((n) => n.workloads))].filter((k) => k.startsWith("ml.")).sort();
    if (offered.length) kinds = offered;
  } catch {
    // keep the defaults
  }
  fill(ctx.root, pageHeader("Jobs"),
    card("New job", h("p", { class: "muted" }, "Upload a data set and pick a workload; the price is escrowed from your wallet at submission and the rest refunded when the job completes. Federated training is submitted with the CLI or SDK (quackmesh train) and shows here like any job."), submitForm(kinds)),
    card("Your jobs", listBox));
  const load = async () => {
    const { jobs } = await api.get("/v1/jobs?limit=100", { signal: ctx.signal });
    fill(listBox, table([
      { label: "Job", cell: (j) => h("a", { href: `#/jobs/${j.id}`, class: "mono" }, shortId(j.id)) },
      { label: "Kind", cell: (j) => j.kind },
      { label: "State", cell: (j) => badge(j.state) },
      { label: "Submitted", cell: (j) => ago(j.created_at) },
      { label: "Units", cell: (j) => `${j.units}` },
      { label: "Escrowed", cell: (j) => duck(j.escrowed) },
      { label: "Paid", cell: (j) => duck(j.paid) },
    ], jobs, { caption: "Your jobs", empty: "No jobs yet: submit one above." }));
  };
  ctx.onEvents({ types: ["job.*"] }, throttle(() => load().catch(() => {}), 1000));
  await load();
}
