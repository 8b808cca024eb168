// The console's shell: the session, the navigation its scopes allow, and hash routes.
// Each view renders into <main> and may poll through its `life`; leaving a view stops it.

import { UNAUTHORIZED_EVENT } from "./api.js";
import { clear, h } from "./dom.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";
import { renderKeys } from "./keys.js";
import { renderLogin } from "./login.js";
import { renderNodes, renderQueues } from "./nodes.js";
import { renderPlayground } from "./playground.js";
import { session } from "./session.js";
import { renderUsage } from "./usage.js";

const ROUTES = [
  { path: /^\/playground$/, render: renderPlayground, scope: "jobs", nav: "Playground" },
  { path: /^\/jobs$/, render: renderJobs, scope: "any", nav: "Jobs" },
  { path: /^\/jobs\/([0-9A-Za-z]{1,64})$/, render: renderJob, scope: "any", under: "Jobs" },
  { path: /^\/usage$/, render: renderUsage, scope: "jobs", nav: "Usage" },
  { path: /^\/nodes$/, render: renderNodes, scope: "admin", nav: "Nodes" },
  { path: /^\/queues$/, render: renderQueues, scope: "admin", nav: "Queues" },
  { path: /^\/keys$/, render: renderKeys, scope: "admin", nav: "Keys" },
];

let life = null;
let pendingMessage = null;

// Go to ``hash`` and show ``message`` there (a hash change renders on its own).
function go(hash, message) {
  pendingMessage = message;
  if (location.hash === hash) route();
  else location.hash = hash;
}

// A view's lifetime: its timers stop, and its late answers are dropped, once it is left.
function newLife() {
  const timers = [];
  return {
    alive: true,
    every(ms, task) {
      const run = async () => {
        if (!this.alive) return;
        try {
          await task();
        } finally {
          if (this.alive) timers.push(setTimeout(run, ms));
        }
      };
      timers.push(setTimeout(run, ms));
    },
    end() {
      this.alive = false;
      timers.forEach(clearTimeout);
    },
  };
}

function allowed(route) {
  if (route.scope === "any") return session.has("jobs") || session.has("admin");
  return session.has(route.scope);
}

function home() {
  return session.has("admin") ? "#/nodes" : "#/playground";
}

function renderNav(current) {
  const nav = document.getElementById("nav");
  clear(nav);
  const signedIn = Boolean(session.key());
  nav.hidden = !signedIn;
  document.querySelector("[data-action=logout]").hidden = !signedIn;
  document.getElementById("who").textContent = signedIn ? describeSession() : "";
  if (!signedIn) return;
  for (const route of ROUTES) {
    if (!route.nav || !allowed(route)) continue;
    const href = "#/" + route.nav.toLowerCase();
    const here = current && (current === route || current.under === route.nav);
    nav.append(h("a", { href, "aria-current": here ? "page" : null }, route.nav));
  }
}

function describeSession() {
  const scopes = session.scopes().join(" + ");
  const account = session.account();
  return account ? account + " · " + scopes : scopes;
}

function route() {
  const message = pendingMessage;
  pendingMessage = null;
  if (life) life.end();
  life = newLife();
  const view = document.getElementById("view");
  clear(view);
  const path = location.hash.replace(/^#/, "") || "/";
  if (!session.key()) {
    renderNav(null);
    const wanted = path !== "/login" && path !== "/" ? "#" + path : null;
    if (path !== "/login") history.replaceState(null, "", "#/login");
    renderLogin(view, { message, onLogin: () => go(wanted || home(), null) });
    return;
  }
  const found = ROUTES.map((r) => [r, path.match(r.path)]).find(([, match]) => match);
  if (!found) {
    location.replace(home());
    return;
  }
  const [current, match] = found;
  renderNav(current);
  if (!allowed(current)) {
    view.append(h("p", { class: "notice notice-error", role: "alert" }, "This key cannot see this view."));
    return;
  }
  current.render(view, { params: match.slice(1), life });
  view.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => route());
window.addEventListener(UNAUTHORIZED_EVENT, (event) => {
  session.clear();
  go("#/login", "Your key was refused (" + event.detail + "). Log in again.");
});
document.querySelector("[data-action=logout]").addEventListener("click", () => {
  session.clear();
  go("#/login", "Logged out.");
});
route();
