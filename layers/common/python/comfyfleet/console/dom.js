// Building elements: text goes in as text (textContent), never as HTML, so what the API
// returns (job metadata, error messages, node names: user input) cannot become markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      for (const [key, data] of Object.entries(value)) element.dataset[key] = data;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(element) {
  while (element.firstChild) element.firstChild.remove();
  return element;
}

const UNITS = [
  ["year", 365 * 86400],
  ["month", 30 * 86400],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];
const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

export function ago(iso, now = Date.now()) {
  const seconds = Math.round((Date.parse(iso) - now) / 1000);
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return relative.format(Math.round(seconds / size), unit);
    }
  }
  return iso;
}

// A time shown relative ("3 minutes ago"), exact on hover and to screen readers.
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const exact = new Date(iso);
  return h("time", { datetime: iso, title: exact.toLocaleString() + " (" + iso + ")" }, ago(iso));
}

export function bytes(count) {
  if (typeof count !== "number") return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
}

const STATE_CLASS = {
  queued: "state-wait",
  running: "state-run",
  completed: "state-ok",
  failed: "state-bad",
  cancelled: "state-off",
  idle: "state-ok",
  busy: "state-run",
  draining: "state-wait",
  unhealthy: "state-bad",
  offline: "state-off",
  active: "state-ok",
  revoked: "state-off",
};

// A state in words and colour together, with the field name tests and scripts select on.
export function badge(state, field = "status") {
  return h("span", { class: "badge " + (STATE_CLASS[state] || ""), dataset: { field } }, state);
}

export function section(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

export function notice(kind, ...children) {
  return h("div", { class: "notice notice-" + kind, role: kind === "error" ? "alert" : "status" }, ...children);
}

export function loading(what = "Loading") {
  return h("p", { class: "loading", role: "status" }, what + "…");
}

export function table(headings, rows, empty) {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h("table", {}, h("thead", {}, h("tr", {}, headings.map((title) => h("th", { scope: "col" }, title)))), h("tbody", {}, rows)),
  );
}

// Asks once, in the page's <dialog>; resolves true when confirmed.
export function confirmAction(question) {
  const dialog = document.getElementById("confirm");
  dialog.querySelector("[data-field=question]").textContent = question;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
    dialog.querySelector("[data-action=dismiss]").focus();
  });
}
