// Live updates over Server-Sent Events (`/api/live`). When the stream is unavailable the
// feed reports mode "polling" and tries again later; the page then polls the REST API.
// Each connection opens with a new single-use ticket, so the feed reconnects by itself
// rather than leaving it to the browser (whose retry would reuse a spent ticket).

const RETRY_MS = 30000; // after the stream was refused or could not be reached
const RECONNECT_MS = 3000; // after a stream that was open dropped

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
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
  }

  retryIn(delay) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  setMode(mode) {
    if (mode === this.mode) return;
    this.mode = mode;
    this.handlers.onMode(mode);
  }

  async connect() {
    if (!("EventSource" in window)) {
      this.setMode("polling");
      return;
    }
    let url;
    try {
      url = await this.api.liveUrl();
    } catch (error) {
      // No ticket: poll meanwhile; try again soon if the node did not answer (restarting),
      // later if it refused (no such endpoint, token revoked).
      if (!this.stopped) {
        this.setMode("polling");
        this.retryIn(error.status === 0 ? RECONNECT_MS : RETRY_MS);
      }
      return;
    }
    if (this.stopped) return;
    const source = new EventSource(url);
    this.source = source;
    let opened = false;
    const parse = (handler) => (message) => {
      try {
        handler(JSON.parse(message.data));
      } catch (error) {
        console.warn("ignored a live message that is not JSON", error);
      }
    };
    source.addEventListener("open", () => {
      opened = true;
      this.setMode("live");
    });
    source.addEventListener("event", parse(this.handlers.onEvent));
    source.addEventListener("camera", parse(this.handlers.onCamera));
    source.addEventListener("status", parse(this.handlers.onStatus));
    source.addEventListener("error", () => {
      // The ticket is spent: the browser's own reconnection would be refused. Close, poll
      // meanwhile, and connect again with a new ticket: soon if the stream was open (the node
      // restarted, the network blinked), later if it was refused.
      source.close();
      if (this.source !== source || this.stopped) return;
      this.source = null;
      this.setMode("polling");
      this.retryIn(opened ? RECONNECT_MS : RETRY_MS);
    });
  }
}
