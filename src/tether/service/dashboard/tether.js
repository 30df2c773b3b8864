/*
 * tether.js: a browser WebSocket client that cannot storm.
 *
 * What seed 004 learned the hard way, built in:
 *  - single flight: connect() while a socket is connecting or open does nothing (never two sockets);
 *  - full-jitter backoff (delay = random(0, min(cap, base * 2^n))), reset only after `stableAfter` ms up;
 *  - an optional attempt limit, after which it stops and says so (state "failed"), so the page shows a
 *    reconnect button instead of looping; reconnectNow() always works again (no stuck lock);
 *  - pauses while the tab is hidden, resumes when visible; reconnects at once on the `online` event;
 *  - an application heartbeat with timeout detection (half-open sockets are noticed);
 *  - close codes respected: auth closes (1008, 4001, 4003, 4401, 4403) stop for good; 1013 waits at
 *    least the server's hint ("retry after N" in the reason) before trying again;
 *  - resume: every event carries an id; on reconnect the client sends the last id it saw, so the
 *    server replays what was missed (like SSE's Last-Event-ID).
 *
 * Usage:
 *   const sock = new TetherSocket("ws://127.0.0.1:8080/api/live", { token });
 *   sock.addEventListener("event", (e) => render(e.detail));
 *   sock.addEventListener("state", (e) => showState(e.detail.state, sock.lastCloseCode));
 *   sock.connect();
 *
 * Wire protocol (tether's /api/live):
 *   client -> {"type":"hello","token":T,"last_event_id":N|null}   first message
 *   server -> {"type":"event","id":N,"event":{...}}               in id order, replay first
 *   server -> {"type":"reset","last_event_id":N}                  the cursor is too old: refetch state
 *   client -> {"type":"ping","t":ms}   server -> {"type":"pong","t":ms}
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  root.Tether = api;
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const AUTH_CODES = [1008, 4001, 4003, 4401, 4403];

  const STATES = Object.freeze({
    IDLE: "idle",
    CONNECTING: "connecting",
    OPEN: "open",
    BACKING_OFF: "backing_off",
    PAUSED: "paused", // tab hidden: no socket, no timers
    FAILED: "failed", // attempt limit reached or auth refused: waits for reconnectNow()
    CLOSED: "closed", // close() was called: never reconnects
  });

  function retryAfterFromReason(reason) {
    const m = /(\d+(?:\.\d+)?)/.exec(reason || "");
    return m ? parseFloat(m[1]) * 1000 : null;
  }

  class TetherSocket extends EventTarget {
    /**
     * @param {string} url  ws:// or wss:// URL of the live channel
     * @param {object} [opts]
     */
    constructor(url, opts = {}) {
      super();
      this.url = url;
      this.opts = Object.assign(
        {
          token: null,
          protocols: undefined,
          baseDelay: 500, // ms, first backoff step
          maxDelay: 20000, // ms, cap (centrifuge-js uses 20 s)
          maxAttempts: Infinity, // then state "failed" and a manual reconnect
          stableAfter: 10000, // ms up before the backoff resets (accept-then-close peers)
          connectTimeout: 10000,
          heartbeatInterval: 15000,
          heartbeatTimeout: 10000,
          connectDelay: 0, // ms to wait before the very first connect (seed 004's "delayed connect")
          authCodes: AUTH_CODES,
          pauseWhenHidden: true,
          random: Math.random,
          WebSocket: typeof WebSocket !== "undefined" ? WebSocket : null,
        },
        opts
      );
      this.state = STATES.IDLE;
      this.attempts = 0; // attempts since the last stable connection
      this.totalAttempts = 0;
      this.lastCloseCode = null;
      this.lastCloseReason = "";
      this.lastError = null;
      this.lastEventId = opts.lastEventId ?? null;
      this.nextDelay = null;
      this._ws = null;
      this._timers = new Set();
      this._openedAt = null;
      this._pingSentAt = null;
      this._listening = false;
    }

    /* ---- public API ---- */

    /** Start (or resume) connecting. Idempotent: never opens a second socket. */
    connect() {
      if (this.state === STATES.CLOSED) return;
      this._listen();
      if (this._ws || this.state === STATES.CONNECTING || this.state === STATES.OPEN) return;
      if (this.state === STATES.BACKING_OFF) return; // a timer is already due
      if (this._hidden()) return this._setState(STATES.PAUSED);
      if (this.state === STATES.IDLE && this.opts.connectDelay > 0) {
        this._setState(STATES.BACKING_OFF, { delay: this.opts.connectDelay });
        this._after(this.opts.connectDelay, () => this._open());
        return;
      }
      this._open();
    }

    /** Manual reconnect (the button): clears a failure or a pending wait and tries now. */
    reconnectNow() {
      if (this.state === STATES.CLOSED) return;
      this._clearTimers();
      if (this._ws) return; // already connecting or open: single flight
      this.attempts = 0;
      this._open();
    }

    /** Intentional close: never reconnects. */
    close(code = 1000, reason = "client closing") {
      this._clearTimers();
      this._unlisten();
      const ws = this._ws;
      this._ws = null;
      this._setState(STATES.CLOSED);
      if (ws && ws.readyState <= 1) ws.close(code, reason);
    }

    send(data) {
      if (!this._ws || this._ws.readyState !== 1) throw new Error("tether: not connected");
      this._ws.send(typeof data === "string" ? data : JSON.stringify(data));
    }

    /* ---- internals ---- */

    _hidden() {
      return this.opts.pauseWhenHidden && typeof document !== "undefined" && document.visibilityState === "hidden";
    }

    _listen() {
      if (this._listening || typeof window === "undefined") return;
      this._listening = true;
      this._onVisibility = () => {
        if (this._hidden()) {
          // Phoenix-style pause: no socket and no retries while nobody is looking.
          if (this.state !== STATES.FAILED && this.state !== STATES.CLOSED) {
            this._clearTimers();
            this._drop(STATES.PAUSED);
          }
        } else if (this.state === STATES.PAUSED) {
          this._open();
        }
      };
      this._onOnline = () => {
        // centrifuge-js: the network is back, try now instead of waiting out the backoff.
        if (this.state === STATES.BACKING_OFF || this.state === STATES.PAUSED) {
          this._clearTimers();
          if (!this._hidden()) this._open();
        }
      };
      document.addEventListener("visibilitychange", this._onVisibility);
      window.addEventListener("online", this._onOnline);
    }

    _unlisten() {
      if (!this._listening) return;
      this._listening = false;
      document.removeEventListener("visibilitychange", this._onVisibility);
      window.removeEventListener("online", this._onOnline);
    }

    _setState(state, detail = {}) {
      if (this.state === state && !detail.force) return;
      this.state = state;
      this.dispatchEvent(new CustomEvent("state", { detail: Object.assign({ state }, detail) }));
    }

    _after(ms, fn) {
      const t = setTimeout(() => {
        this._timers.delete(t);
        fn();
      }, ms);
      this._timers.add(t);
      return t;
    }

    _clearTimers() {
      for (const t of this._timers) clearTimeout(t);
      this._timers.clear();
    }

    _open() {
      if (this._ws || this.state === STATES.CLOSED) return; // single flight
      if (this._hidden()) return this._setState(STATES.PAUSED);
      this.attempts += 1;
      this.totalAttempts += 1;
      this._setState(STATES.CONNECTING, { attempt: this.attempts });
      let ws;
      try {
        ws = new this.opts.WebSocket(this.url, this.opts.protocols);
      } catch (err) {
        this.lastError = String(err);
        return this._scheduleRetry(null);
      }
      this._ws = ws;
      const connectTimer = this._after(this.opts.connectTimeout, () => {
        if (this._ws === ws && ws.readyState === 0) ws.close(4000, "connect timeout");
      });
      ws.onopen = () => {
        if (this._ws !== ws) return;
        clearTimeout(connectTimer);
        this._timers.delete(connectTimer);
        this._openedAt = Date.now();
        ws.send(JSON.stringify({ type: "hello", token: this.opts.token, last_event_id: this.lastEventId }));
        this._setState(STATES.OPEN, { attempt: this.attempts });
        this._after(this.opts.stableAfter, () => {
          if (this._ws === ws) this.attempts = 0; // stable: the next drop starts the backoff afresh
        });
        this._heartbeat(ws);
      };
      ws.onmessage = (msg) => {
        if (this._ws !== ws) return;
        let data;
        try {
          data = JSON.parse(msg.data);
        } catch (_) {
          return this.dispatchEvent(new CustomEvent("message", { detail: msg.data }));
        }
        if (data.type === "pong") {
          this._pingSentAt = null;
          this.dispatchEvent(new CustomEvent("heartbeat", { detail: { rtt: Date.now() - data.t } }));
        } else if (data.type === "event") {
          if (this.lastEventId !== null && data.id <= this.lastEventId) return; // replay overlap
          this.lastEventId = data.id;
          this.dispatchEvent(new CustomEvent("event", { detail: data }));
        } else if (data.type === "reset") {
          this.lastEventId = data.last_event_id;
          this.dispatchEvent(new CustomEvent("reset", { detail: data }));
        } else {
          this.dispatchEvent(new CustomEvent("message", { detail: data }));
        }
      };
      ws.onerror = () => {
        this.lastError = "websocket error";
      };
      ws.onclose = (ev) => {
        if (this._ws !== ws) return; // an old socket we already gave up on
        this._ws = null;
        this.lastCloseCode = ev.code;
        this.lastCloseReason = ev.reason || "";
        this.dispatchEvent(new CustomEvent("close", { detail: { code: ev.code, reason: ev.reason } }));
        this._clearTimers();
        if (this.state === STATES.CLOSED || this.state === STATES.PAUSED) return;
        if (this.opts.authCodes.includes(ev.code)) {
          this.lastError = `refused: ${ev.code} ${ev.reason || ""}`.trim();
          return this._setState(STATES.FAILED, { code: ev.code, reason: ev.reason, auth: true });
        }
        const hint = ev.code === 1013 ? retryAfterFromReason(ev.reason) : null;
        this._scheduleRetry(hint);
      };
    }

    _heartbeat(ws) {
      this._after(this.opts.heartbeatInterval, () => {
        if (this._ws !== ws || ws.readyState !== 1) return;
        this._pingSentAt = Date.now();
        ws.send(JSON.stringify({ type: "ping", t: this._pingSentAt }));
        this._after(this.opts.heartbeatTimeout, () => {
          if (this._ws === ws && this._pingSentAt !== null) {
            // half-open: the browser would wait minutes for TCP to notice; we don't.
            this.lastError = "heartbeat timeout";
            ws.close(4000, "heartbeat timeout");
            // onclose may be slow on a dead network: schedule now and ignore that socket.
            this._ws = null;
            this.lastCloseCode = 4000;
            this.lastCloseReason = "heartbeat timeout";
            this._clearTimers();
            this._scheduleRetry(null);
          }
        });
        this._heartbeat(ws);
      });
    }

    _drop(nextState) {
      const ws = this._ws;
      this._ws = null;
      if (ws && ws.readyState <= 1) ws.close(1000, "paused");
      this._setState(nextState);
    }

    _scheduleRetry(minDelayMs) {
      if (this.attempts >= this.opts.maxAttempts) {
        return this._setState(STATES.FAILED, { reason: "attempt limit reached" });
      }
      const step = Math.min(this.opts.maxDelay, this.opts.baseDelay * Math.pow(2, Math.max(0, this.attempts - 1)));
      let delay = this.opts.random() * step; // full jitter
      if (minDelayMs !== null) delay = minDelayMs + delay * 0.1; // never less than the server asked
      this.nextDelay = delay;
      this._setState(STATES.BACKING_OFF, { delay, attempt: this.attempts, force: true });
      this._after(delay, () => this._open());
    }
  }

  return { TetherSocket, STATES, AUTH_CODES };
});
