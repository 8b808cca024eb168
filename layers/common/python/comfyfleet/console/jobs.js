// Jobs, newest first: your own, or every account's for an admin key (filter by account);
// by state, page by page; the first page refreshes itself while a job has not ended.

import { get } from "./api.js";
import { badge, clear, h, loading, table, when } from "./dom.js";
import { problemBox } from "./problems.js";
import { session } from "./session.js";

const STATES = ["", "queued", "running", "completed", "failed", "cancelled"];
const ENDED = new Set(["completed", "failed", "cancelled"]);
const PAGE = 20;

export function progressOf(job) {
  const progress = job.progress;
  if (job.status !== "running") return null;
  const value = progress ? progress.value : 0;
  const max = progress && progress.max ? progress.max : 1;
  return h("progress", { value, max, "aria-label": "progress" }, Math.round((100 * value) / max) + "%");
}

function took(job) {
  return job.execution_time_ms == null ? "—" : (job.execution_time_ms / 1000).toFixed(1) + " s";
}

function row(job, all) {
  const outputs = (job.outputs && (job.outputs.files || []).length) || (job.outputs && (job.outputs.images || []).length) || 0;
  return h(
    "tr",
    { dataset: { jobId: job.job_id } },
    h("td", {}, h("a", { href: "#/jobs/" + job.job_id, class: "mono" }, job.job_id)),
    h("td", {}, badge(job.status), " ", progressOf(job)),
    all ? h("td", { class: "mono" }, job.account_id) : null,
    h("td", {}, when(job.created_at)),
    h("td", {}, took(job)),
    h("td", {}, String(outputs)),
  );
}

export function renderJobs(view, { life }) {
  const all = session.has("admin");
  const status = h("select", { name: "status", id: "status" }, STATES.map((state) => h("option", { value: state }, state || "any state")));
  const account = all ? h("input", { name: "account_id", id: "account-filter", placeholder: "every account", spellcheck: "false" }) : null;
  const listing = h("div", { class: "listing" }, loading());
  const older = h("button", { type: "button", class: "quiet", dataset: { action: "older" } }, "Older");
  const newer = h("button", { type: "button", class: "quiet", dataset: { action: "newer" } }, "Newer");
  const refreshed = h("small", { class: "muted" });
  const cursors = [];
  let next = null;

  async function load() {
    const query = { limit: PAGE, status: status.value, cursor: cursors[cursors.length - 1] };
    if (account && account.value.trim()) query.account_id = account.value.trim();
    let page;
    try {
      page = await get(all ? "/v1/admin/jobs" : "/v1/jobs", query);
    } catch (error) {
      if (life.alive) clear(listing).append(problemBox(error));
      return;
    }
    if (!life.alive) return;
    next = page.next_cursor;
    const headings = ["Job", "Status", all ? "Account" : null, "Created", "Took", "Outputs"].filter(Boolean);
    const empty = cursors.length ? "No older jobs." : "No jobs yet: submit one in the playground.";
    clear(listing).append(table(headings, page.jobs.map((job) => row(job, all)), empty));
    older.disabled = !next;
    newer.disabled = cursors.length === 0;
    refreshed.textContent = "Updated " + new Date().toLocaleTimeString();
    return page;
  }
  const reload = () => {
    cursors.length = 0;
    load();
  };
  status.addEventListener("change", reload);
  if (account) account.addEventListener("change", reload);
  older.addEventListener("click", () => {
    if (next) cursors.push(next);
    load();
  });
  newer.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  const filters = h(
    "div",
    { class: "filters" },
    h("label", { for: "status" }, "State"),
    status,
    account ? [h("label", { for: "account-filter" }, "Account"), account] : null,
    refreshed,
  );
  view.append(h("h1", {}, all ? "Jobs of every account" : "Your jobs"), filters, listing, h("div", { class: "pager" }, newer, older));
  load();
  life.every(3000, async () => {
    if (cursors.length === 0 && listing.querySelector("[data-field=status]")) {
      const states = [...listing.querySelectorAll("[data-field=status]")].map((cell) => cell.textContent);
      if (states.some((state) => !ENDED.has(state))) await load();
    }
  });
}
