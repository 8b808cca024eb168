// Accounts and keys (admin): create an account, create a key for an account (its value
// shown this once, with a copy button), list an account's keys and revoke one.

import { call, get } from "./api.js";
import { badge, clear, confirmAction, h, section, table, when } from "./dom.js";
import { problemBox } from "./problems.js";

function shownOnce(title, value, field) {
  const code = h("code", { dataset: { field } }, value);
  const copied = h("span", { class: "muted", "aria-live": "polite" });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      copied.textContent = "Copied.";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      copied.textContent = "Selected: copy it with Ctrl+C.";
    }
  };
  return h(
    "div",
    { class: "notice notice-secret", role: "status" },
    h("p", {}, h("strong", {}, title), " — shown this once; it is not stored anywhere you can read it again."),
    h("p", { class: "secret" }, code, " ", h("button", { type: "button", class: "quiet", dataset: { action: "copy" }, onclick: copy }, "Copy"), " ", copied),
  );
}

function accountPanel(onCreated) {
  const tier = h("input", { name: "tier", id: "new-tier", value: "free", spellcheck: "false" });
  const name = h("input", { name: "account_name", id: "new-account-name", placeholder: "optional" });
  const result = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary", dataset: { action: "create-account" } }, "Create account");
  const form = h("form", { method: "post", class: "inline-form" }, h("label", { for: "new-tier" }, "Tier"), tier, h("label", { for: "new-account-name" }, "Name"), name, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      const account = await call("POST", "/v1/admin/accounts", { body: { tier: tier.value.trim(), name: name.value.trim() } });
      result.replaceChildren(
        h("p", { class: "notice notice-info", role: "status" }, "Account ", h("code", { dataset: { field: "new-account" } }, account.account_id), " (" + account.tier + ") created."),
        shownOnce("Webhook secret", account.webhook_secret, "webhook-secret"),
      );
      onCreated(account.account_id);
    } catch (error) {
      result.replaceChildren(problemBox(error));
    }
    button.disabled = false;
  });
  return section("New account", form, result);
}

function keyRow(key, revoke) {
  const state = key.revoked_at ? "revoked" : "active";
  return h(
    "tr",
    { dataset: { keyId: key.key_id } },
    h("td", { class: "mono" }, key.key_id),
    h("td", {}, key.name || h("span", { class: "muted" }, "—")),
    h("td", {}, key.scopes.join(", ")),
    h("td", {}, when(key.created_at)),
    h("td", {}, badge(state)),
    h("td", {}, key.revoked_at ? null : h("button", { type: "button", class: "danger", dataset: { action: "revoke" }, onclick: () => revoke(key) }, "Revoke")),
  );
}

export function renderKeys(view) {
  const account = h("input", { name: "account_id", id: "key-account", placeholder: "acct_…", spellcheck: "false", required: true });
  const jobs = h("input", { type: "checkbox", name: "scope", value: "jobs", id: "scope-jobs", checked: true });
  const admin = h("input", { type: "checkbox", name: "scope", value: "admin", id: "scope-admin" });
  const keyName = h("input", { name: "key_name", id: "key-name", placeholder: "optional" });
  const created = h("div", { "aria-live": "polite" });
  const listing = h("div", { class: "listing" });

  async function list() {
    const id = account.value.trim();
    if (!id) return;
    try {
      const keys = (await get("/v1/admin/keys", { account_id: id })).keys;
      clear(listing).append(table(["Key", "Name", "Scopes", "Created", "State", ""], keys.map((key) => keyRow(key, revoke)), "This account has no key yet."));
    } catch (error) {
      clear(listing).append(problemBox(error));
    }
  }
  async function revoke(key) {
    if (!(await confirmAction("Revoke key " + key.key_id + (key.name ? " (" + key.name + ")" : "") + "? Requests with it are refused from then on."))) return;
    try {
      await call("DELETE", "/v1/admin/keys/" + encodeURIComponent(key.key_id));
    } catch (error) {
      created.replaceChildren(problemBox(error));
    }
    await list();
  }
  async function createKey() {
    const scopes = [jobs, admin].filter((box) => box.checked).map((box) => box.value);
    try {
      const key = await call("POST", "/v1/admin/keys", { body: { account_id: account.value.trim(), scopes, name: keyName.value.trim() } });
      created.replaceChildren(shownOnce("API key " + key.key_id, key.api_key, "new-key"));
    } catch (error) {
      created.replaceChildren(problemBox(error));
    }
    await list();
  }
  const form = h(
    "form",
    { method: "post", class: "stack" },
    h("div", { class: "inline-form" }, h("label", { for: "key-account" }, "Account"), account, h("button", { type: "submit", class: "quiet", dataset: { action: "list-keys" } }, "Show keys")),
    h(
      "fieldset",
      { class: "inline-form" },
      h("legend", {}, "New key for this account"),
      jobs,
      h("label", { for: "scope-jobs" }, "jobs"),
      admin,
      h("label", { for: "scope-admin" }, "admin"),
      h("label", { for: "key-name" }, "Name"),
      keyName,
      h("button", { type: "button", class: "primary", dataset: { action: "create-key" }, onclick: createKey }, "Create key"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    list();
  });
  const useAccount = (id) => {
    account.value = id;
    clear(created);
    list();
  };
  view.append(h("h1", {}, "Accounts and keys"), accountPanel(useAccount), section("Keys", form, created, listing));
}
