// One job: its state, place in the queue, progress and live preview while it runs, its
// outputs (images, video, sound) with downloads, its error with ComfyUI's node details, and
// its webhook's delivery. It refreshes itself until the job has ended.

import { call, get } from "./api.js";
import { append, badge, clear, h, loading, section, when } from "./dom.js";
import { progressOf } from "./jobs.js";
import { problemBox } from "./problems.js";
import { session } from "./session.js";

const ENDED = new Set(["completed", "failed", "cancelled"]);

async function fetchJob(id) {
  if (session.has("jobs")) {
    try {
      return await get("/v1/jobs/" + id);
    } catch (error) {
      if (error.status !== 404 || !session.has("admin")) throw error;
    }
  }
  return get("/v1/admin/jobs/" + id);
}

function facts(job) {
  const rows = [
    ["Status", badge(job.status)],
    job.status === "queued" ? ["Queue position", h("span", { dataset: { field: "queue_position" } }, String(job.queue_position ?? "—"))] : null,
    job.status === "running" ? ["Progress", h("span", { class: "progress-line" }, progressOf(job), " ", progressText(job))] : null,
    ["Created", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Ended", when(job.completed_at)],
    ["Run time", job.execution_time_ms == null ? "—" : (job.execution_time_ms / 1000).toFixed(2) + " s"],
    ["Attempts", String(job.attempts)],
    job.deployment ? ["Deployment", job.deployment.name + " v" + job.deployment.version] : null,
    ["Account", h("span", { class: "mono" }, job.account_id)],
    job.cancel_requested && !ENDED.has(job.status) ? ["Cancel", "requested"] : null,
  ].filter(Boolean);
  return h("dl", { class: "facts" }, rows.map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function progressText(job) {
  const progress = job.progress;
  if (!progress) return "starting";
  return Math.round(progress.percent) + "%" + (progress.node ? " · node " + progress.node : "");
}

function outputOf(file) {
  const type = file.content_type || "";
  const name = file.filename || file.url.split("?")[0].split("/").pop();
  let media;
  if (type.startsWith("video/")) media = h("video", { src: file.url, controls: true, preload: "metadata", dataset: { output: "" } });
  else if (type.startsWith("audio/")) media = h("audio", { src: file.url, controls: true, preload: "metadata", dataset: { output: "" } });
  else if (type.startsWith("image/") || !type) media = h("img", { src: file.url, alt: name, loading: "lazy", dataset: { output: "" } });
  return h("figure", { class: "output" }, media, h("figcaption", {}, h("a", { href: file.url, download: name, rel: "noopener" }, "Download " + name)));
}

function outputs(job) {
  const files = (job.outputs && job.outputs.files) || [];
  const listed = files.length ? files : ((job.outputs && job.outputs.images) || []).map((url) => ({ url, content_type: "image/png" }));
  if (!listed.length) return null;
  return section("Outputs", h("div", { class: "outputs" }, listed.map(outputOf)));
}

function jobError(job) {
  const error = job.error;
  if (!error) return null;
  const where = [error.node_id && "node " + error.node_id, error.node_type].filter(Boolean).join(" · ");
  return section(
    "Error",
    h(
      "div",
      { class: "notice notice-error", dataset: { field: "job-error" } },
      h("p", {}, h("strong", {}, error.code), " ", error.message),
      where ? h("p", {}, where) : null,
      error.details != null ? h("pre", {}, JSON.stringify(error.details, null, 2)) : null,
    ),
  );
}

function webhook(job) {
  if (!job.webhook) return null;
  const hook = job.webhook;
  return section(
    "Webhook",
    h("p", { dataset: { field: "webhook" } }, badge(hook.state, "webhook-state"), " ", hook.attempts + " attempt(s) to ", h("span", { class: "mono" }, hook.url)),
  );
}

function metadata(job) {
  if (!job.metadata) return null;
  return section("Metadata", h("pre", { dataset: { field: "metadata" } }, JSON.stringify(job.metadata, null, 2)));
}

export function renderJob(view, { params, life }) {
  const [id] = params;
  const body = h("div", {}, loading());
  const preview = h("img", { alt: "live preview", dataset: { preview: "" }, hidden: true });
  const cancelResult = h("div", { "aria-live": "polite" });
  view.append(h("h1", {}, "Job ", h("span", { class: "mono" }, id)), body);
  let job = null;

  async function cancel(button) {
    button.disabled = true;
    try {
      await call("POST", "/v1/jobs/" + id + "/cancel");
      await refresh();
    } catch (error) {
      cancelResult.replaceChildren(problemBox(error));
      button.disabled = false;
    }
  }

  async function refreshPreview() {
    if (!job || job.status !== "running" || job.account_id !== session.account()) return;
    try {
      const link = await call("GET", "/v1/jobs/" + id + "/preview", { query: { redirect: "false" } });
      if (!life.alive || !link.url) return; // no frame yet: the preview waits for one
      if (preview.getAttribute("src") !== link.url) preview.src = link.url;
      preview.hidden = false;
    } catch {
      // A missed frame is not worth an error: the next poll asks again.
    }
  }

  async function refresh() {
    try {
      job = await fetchJob(id);
    } catch (error) {
      if (life.alive) clear(body).append(problemBox(error));
      return;
    }
    if (!life.alive) return;
    const own = session.has("jobs") && job.account_id === session.account();
    const cancellable = own && !ENDED.has(job.status);
    const actions = cancellable ? h("div", { class: "actions" }, h("button", { type: "button", class: "danger", dataset: { action: "cancel" }, onclick: (event) => cancel(event.currentTarget) }, "Cancel job"), cancelResult) : null;
    const live = job.status === "running" ? section("Live preview", preview) : null;
    append(clear(body), [section("Status", facts(job), actions), live, jobError(job), outputs(job), webhook(job), metadata(job)]);
  }

  refresh().then(refreshPreview);
  life.every(1500, async () => {
    if (job && ENDED.has(job.status) && !(job.webhook && job.webhook.state === "pending")) return;
    await refresh();
    await refreshPreview();
  });
}
