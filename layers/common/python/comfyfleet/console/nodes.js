// The fleet (admin): every node with its state, heartbeat, GPU, job, cache and software,
// drained or removed after a confirmation; and the queues' depths. Both refresh themselves.

import { call, get } from "./api.js";
import { ago, badge, bytes, clear, confirmAction, h, loading, table } from "./dom.js";
import { problemBox } from "./problems.js";

function stamp(element) {
  element.textContent = "Updated " + new Date().toLocaleTimeString() + " · refreshes every few seconds";
}

function nodeRow(node, act) {
  const heartbeat = node.heartbeat_at ? h("time", { datetime: node.heartbeat_at, title: node.heartbeat_at }, ago(node.heartbeat_at)) : "—";
  const job = node.current_job ? h("a", { href: "#/jobs/" + node.current_job, class: "mono" }, node.current_job) : h("span", { class: "muted" }, "—");
  const draining = node.status === "draining" || node.status === "offline";
  return h(
    "tr",
    { dataset: { nodeId: node.node_id } },
    h("td", { class: "mono" }, node.node_id),
    h("td", {}, badge(node.status)),
    h("td", { dataset: { field: "heartbeat" } }, heartbeat),
    h("td", {}, node.gpu || "—"),
    h("td", {}, job),
    h("td", {}, String(node.queued)),
    h("td", {}, String(node.cached_models), " · ", bytes(node.free_bytes), " free"),
    h("td", { class: "mono", title: node.environment_id }, (node.environment_id || "—").slice(0, 16)),
    h(
      "td",
      { class: "row-actions" },
      draining ? null : h("button", { type: "button", class: "quiet", dataset: { action: "drain" }, onclick: () => act("drain", node) }, "Drain"),
      h("button", { type: "button", class: "danger", dataset: { action: "remove" }, onclick: () => act("remove", node) }, "Remove"),
    ),
  );
}

const QUESTIONS = {
  drain: (id) => "Drain node " + id + "? It takes no new jobs; its waiting jobs move to the shared queue. Its running job finishes.",
  remove: (id) => "Remove node " + id + " from the registry? Its waiting jobs move to the shared queue; a live agent registers again.",
};

export function renderNodes(view, { life }) {
  const listing = h("div", {}, loading());
  const refreshed = h("small", { class: "muted", dataset: { field: "refreshed" } });
  const result = h("div", { "aria-live": "polite" });

  async function act(action, node) {
    if (!(await confirmAction(QUESTIONS[action](node.node_id)))) return;
    try {
      const path = "/v1/admin/nodes/" + encodeURIComponent(node.node_id);
      const done = action === "drain" ? await call("POST", path + "/drain") : await call("DELETE", path);
      result.replaceChildren(h("p", { class: "notice notice-info", role: "status" }, (action === "drain" ? "Draining " : "Removed ") + node.node_id + ": " + done.moved_jobs + " waiting job(s) moved."));
    } catch (error) {
      result.replaceChildren(problemBox(error));
    }
    await load();
  }

  async function load() {
    let nodes;
    try {
      nodes = (await get("/v1/admin/nodes")).nodes;
    } catch (error) {
      if (life.alive) clear(listing).append(problemBox(error));
      return;
    }
    if (!life.alive) return;
    const headings = ["Node", "Status", "Heartbeat", "GPU", "Job", "Queued", "Models cached", "Environment", "Actions"];
    clear(listing).append(table(headings, nodes.map((node) => nodeRow(node, act)), "No node has registered yet: start an agent (comfyfleet dev starts some)."));
    stamp(refreshed);
  }
  view.append(h("h1", {}, "Nodes"), refreshed, result, listing);
  load();
  life.every(3000, load);
}

function seconds(value) {
  if (value == null) return "—";
  return value < 120 ? Math.round(value) + " s" : Math.round(value / 60) + " min";
}

export function renderQueues(view, { life }) {
  const listing = h("div", {}, loading());
  const refreshed = h("small", { class: "muted", dataset: { field: "refreshed" } });
  async function load() {
    let queues;
    try {
      queues = (await get("/v1/admin/queues")).queues;
    } catch (error) {
      if (life.alive) clear(listing).append(problemBox(error));
      return;
    }
    if (!life.alive) return;
    const rows = queues.map((queue) =>
      h(
        "tr",
        { dataset: { queue: queue.name } },
        h("td", { class: "mono" }, queue.name),
        h("td", {}, queue.kind.replace("_", " ")),
        h("td", { dataset: { field: "visible" } }, String(queue.visible)),
        h("td", {}, String(queue.in_flight)),
        h("td", {}, String(queue.delayed)),
        h("td", {}, seconds(queue.oldest_age_seconds)),
      ),
    );
    clear(listing).append(table(["Queue", "Kind", "Waiting", "In flight", "Delayed", "Oldest"], rows, "No queue found."));
    stamp(refreshed);
  }
  view.append(h("h1", {}, "Queues"), refreshed, listing);
  load();
  life.every(5000, load);
}

