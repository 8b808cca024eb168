// Logging in: the key is tried against /v1 to learn what it may see (its scopes), then kept
// in sessionStorage. The form is built here, so it never submits without this handler.

import { ApiError, call } from "./api.js";
import { h } from "./dom.js";
import { problemBox } from "./problems.js";
import { session } from "./session.js";

export function renderLogin(view, { message, onLogin }) {
  const status = h("div", { class: "login-status" }, message ? h("p", { class: "notice notice-info", role: "status" }, message) : null);
  const input = h("input", {
    name: "api_key",
    id: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "sk_live_…",
  });
  const button = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h(
    "form",
    { id: "login", method: "post", class: "panel login" },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "With an API key: a jobs key sees its jobs, usage and the playground; an admin key also sees the fleet. The key stays in this tab only."),
    h("label", { for: "api-key" }, "API key"),
    input,
    button,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    status.replaceChildren(h("p", { class: "loading", role: "status" }, "Checking the key…"));
    try {
      const me = await call("GET", "/v1/me", { key, quiet401: true });
      const scopes = me.scopes.filter((scope) => scope === "jobs" || scope === "admin");
      if (scopes.length === 0) throw new ApiError(403, "forbidden", "this key has neither the jobs nor the admin scope");
      input.value = "";
      session.save(key, scopes, me.account_id);
      onLogin();
    } catch (error) {
      const shown = error.status === 401 ? new ApiError(401, error.code, "This key is not valid (unknown or revoked).") : error;
      status.replaceChildren(problemBox(shown));
      button.disabled = false;
      input.focus();
    }
  });
  view.append(form);
  input.focus();
}
