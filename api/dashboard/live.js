// Live updates over Server-Sent Events (`/api/live`). When the stream is unavailable the
// feed reports mode "polling" and tries again later; the page then polls the REST API.

const RETRY_MS = 30000;

export class LiveFeed {
  /**
   * handlers: onEvent({type, event}), onCamera({camera, state, previous, reason}),
   * onStatus(stats), onMode("live" | "polling").
   */
  constructor(api, handlers) {
    this.api = api;
    this.handlers = handlers;
    this.source = null;
    this.retryTimer = null;
    this.mode = null;
  }

  start() {
    this.connect();
  }

  stop() {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
  }

  setMode(mode) {
    if (mode === this.mode) return;
    this.mode = mode;
    this.handlers.onMode(mode);
  }

  connect() {
    if (!("EventSource" in window)) {
      this.setMode("polling");
      return;
    }
    const source = new EventSource(this.api.liveUrl());
    this.source = source;
    const parse = (handler) => (message) => {
      try {
        handler(JSON.parse(message.data));
      } catch (error) {
        console.warn("ignored a live message that is not JSON", error);
      }
    };
    source.addEventListener("open", () => this.setMode("live"));
    source.addEventListener("event", parse(this.handlers.onEvent));
    source.addEventListener("camera", parse(this.handlers.onCamera));
    source.addEventListener("status", parse(this.handlers.onStatus));
    source.addEventListener("error", () => {
      this.setMode("polling");
      if (source.readyState === EventSource.CLOSED) {
        // Refused (no such endpoint, bad token): the browser gives up; we retry later.
        source.close();
        this.retryTimer = setTimeout(() => this.connect(), RETRY_MS);
      }
      // Otherwise the browser reconnects by itself; the page polls meanwhile.
    });
  }
}
