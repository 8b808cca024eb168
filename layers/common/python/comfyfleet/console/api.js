// Calls to the /v1 API with the session's key as a bearer token; every answer that is not
// a 2xx becomes an ApiError with the API's stable code, message and details.

import { session } from "./session.js";

// The console is served at <api>/console/…: the API is the folder above this module.
export const API_BASE = new URL("..", import.meta.url).href.replace(/\/$/, "");
export const UNAUTHORIZED_EVENT = "console:unauthorized";

export class ApiError extends Error {
  constructor(status, code, message, details = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

export async function call(method, path, { body, query, key, quiet401 = false } = {}) {
  const url = new URL(API_BASE + path);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json", Authorization: "Bearer " + (key || session.key() || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", "The API is unreachable (" + error.message + ").");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) return data;
  const problem = (data && data.error) || {};
  const retry = response.headers.get("Retry-After");
  const error = new ApiError(
    response.status,
    problem.code || "http_" + response.status,
    problem.message || response.statusText || "request failed",
    problem.details || null,
    retry === null ? null : Number(retry),
  );
  if (response.status === 401 && !quiet401) {
    window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT, { detail: error.message }));
  }
  throw error;
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body) => call("POST", path, { body });
export const remove = (path) => call("DELETE", path);
