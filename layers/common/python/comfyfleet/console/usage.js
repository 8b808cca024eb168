// Your limits and what you use of them now.

import { get } from "./api.js";
import { clear, h, loading, when } from "./dom.js";
import { problemBox } from "./problems.js";

function gauge(title, used, limit, field, extra) {
  return h(
    "div",
    { class: "gauge", dataset: { field } },
    h("h2", {}, title),
    h("p", { class: "figure" }, h("span", { dataset: { field: field + "-used" } }, String(used)), " / ", String(limit)),
    h("meter", { min: 0, max: limit, value: Math.min(used, limit), high: limit * 0.8, "aria-label": title }),
    extra || null,
  );
}

export function renderUsage(view, { life }) {
  const body = h("div", {}, loading());
  view.append(h("h1", {}, "Usage"), body);
  async function load() {
    let usage;
    try {
      usage = await get("/v1/usage");
    } catch (error) {
      if (life.alive) clear(body).append(problemBox(error));
      return;
    }
    if (!life.alive) return;
    const { limits, current } = usage;
    clear(body).append(
      h("p", {}, "Account ", h("span", { class: "mono" }, usage.account_id), " · tier ", h("strong", { dataset: { field: "tier" } }, usage.tier)),
      h(
        "div",
        { class: "gauges" },
        gauge("Requests this minute", current.requests_this_minute, limits.requests_per_minute, "requests", h("p", { class: "muted" }, "Window resets ", when(current.window_resets_at))),
        gauge("Running", current.running, limits.concurrency, "running"),
        gauge("Queued", current.queued, limits.queue_depth, "queued"),
      ),
    );
  }
  load();
  life.every(5000, load);
}
