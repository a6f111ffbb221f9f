// The node's REST API as seen from the page: every call carries the bearer token.

const TOKEN_KEY = "mainstream.token";

// The page lives at <root>/ui/; the API at <root>/api/. Relative URLs keep the dashboard
// working behind a reverse proxy that serves the node under a sub-path.
const API_ROOT = new URL("../", document.baseURI);

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `request failed (HTTP ${status})`);
    this.status = status;
  }
}

export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), API_ROOT).toString();
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(apiUrl(path), init);
    } catch (error) {
      throw new ApiError(0, "the node does not answer");
    }
    if (!response.ok) {
      let detail = "";
      try {
        const answer = await response.json();
        detail = answer.detail || answer.error || "";
      } catch (error) {
        detail = response.statusText;
      }
      throw new ApiError(response.status, detail);
    }
    if (response.status === 204) return null;
    return response.json();
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body ?? {});
  }

  put(path, body) {
    return this.request("PUT", path, body);
  }

  patch(path, body) {
    return this.request("PATCH", path, body);
  }

  delete(path) {
    return this.request("DELETE", path);
  }

  /** An image from the API as an object URL (null when there is none yet). */
  async imageUrl(path) {
    const response = await fetch(apiUrl(path), {
      headers: { Authorization: `Bearer ${this.token}` },
      cache: "no-store",
    });
    if (!response.ok) return null;
    return URL.createObjectURL(await response.blob());
  }

  /**
   * The URL of the Server-Sent Events stream with a fresh ticket: EventSource cannot send
   * headers, and a ticket (one connection, 30 s) keeps the token out of URLs and logs.
   */
  /** The URL of a camera's live view (MJPEG for an <img>) with a fresh one-use ticket. */
  async liveViewUrl(cameraId) {
    const { ticket } = await this.post("api/live/ticket");
    const path = `api/cameras/${encodeURIComponent(cameraId)}/stream.mjpg`;
    return `${apiUrl(path)}?ticket=${encodeURIComponent(ticket)}`;
  }

  async liveUrl() {
    const { ticket } = await this.post("api/live/ticket");
    return `${apiUrl("api/live")}?ticket=${encodeURIComponent(ticket)}`;
  }
}
