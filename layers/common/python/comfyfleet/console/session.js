// The logged-in key and what it may see. sessionStorage only: never a URL, a cookie or
// localStorage, and gone when the tab closes or the user logs out.

const KEY = "comfyfleet.console.key";
const SCOPES = "comfyfleet.console.scopes";
const ACCOUNT = "comfyfleet.console.account";

export const session = {
  key() {
    return sessionStorage.getItem(KEY);
  },
  scopes() {
    try {
      return JSON.parse(sessionStorage.getItem(SCOPES) || "[]");
    } catch {
      return [];
    }
  },
  has(scope) {
    return this.scopes().includes(scope);
  },
  account() {
    return sessionStorage.getItem(ACCOUNT);
  },
  save(key, scopes, account) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(SCOPES, JSON.stringify(scopes));
    if (account) sessionStorage.setItem(ACCOUNT, account);
  },
  clear() {
    for (const name of [KEY, SCOPES, ACCOUNT]) sessionStorage.removeItem(name);
  },
};
