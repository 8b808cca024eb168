// An API error as the user reads it: its code and message, each detail with the node and
// input (a workflow's problems) or the field (a request's), and when to retry.

import { h } from "./dom.js";

function detailText(detail) {
  if (detail === null || typeof detail !== "object") return String(detail);
  const where = [];
  if (detail.node_id) where.push("node " + detail.node_id);
  if (detail.input) where.push("input " + detail.input);
  if (detail.field) where.push(detail.field);
  const code = detail.code ? " (" + detail.code + ")" : "";
  return (where.length ? where.join(" · ") + ": " : "") + (detail.message || "") + code;
}

export function problemBox(error) {
  const lines = [];
  if (error.status === 429 || error.retryAfter) {
    const seconds = error.retryAfter ?? 1;
    lines.push(h("p", { class: "retry" }, "Retry in " + seconds + " s (Retry-After)."));
  }
  const details = Array.isArray(error.details) ? error.details : [];
  return h(
    "div",
    { class: "notice notice-error", role: "alert", dataset: { field: "error", code: error.code || "" } },
    h("p", {}, h("strong", { dataset: { field: "error-code" } }, error.code || "error"), " ", h("span", { dataset: { field: "error-message" } }, error.message || "")),
    lines,
    details.length ? h("ul", { class: "details" }, details.map((detail) => h("li", {}, detailText(detail)))) : null,
  );
}
