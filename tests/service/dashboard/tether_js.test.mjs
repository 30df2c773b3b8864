// Deterministic tests of tether.js: virtual timers and a fake WebSocket, no browser, no sleeps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

function world() {
  let now = 0;
  let seq = 0;
  const timers = new Map();
  globalThis.setTimeout = (fn, ms) => {
    const id = ++seq;
    timers.set(id, { at: now + Math.max(0, ms), fn });
    return id;
  };
  globalThis.clearTimeout = (id) => timers.delete(id);
  Date.now = () => now;
  const advance = (ms) => {
    const end = now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      timers.delete(next[0]);
      now = next[1].at;
      next[1].fn();
    }
    now = end;
  };
  // fire timers one by one until a new socket is created (bounded), like a server waiting for the next handshake
  const nextSocket = (limit = 3600000) => {
    const before = sockets.length;
    const end = now + limit;
    while (sockets.length === before) {
      let next = null;
      for (const [id, t] of timers) if (!next || t.at < next[1].at) next = [id, t];
      if (!next || next[1].at > end) return null;
      timers.delete(next[0]);
      now = next[1].at;
      next[1].fn();
    }
    return sockets.at(-1);
  };
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(d) { this.sent.push(JSON.parse(d)); }
    close(code = 1000, reason = "") { if (this.readyState < 2) { this.readyState = 3; this.onclose?.({ code, reason }); } }
    // server side helpers
    accept() { this.readyState = 1; this.onopen?.(); }
    serverClose(code, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
    push(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
  }
  delete require.cache[require.resolve("../../../src/tether/service/dashboard/tether.js")];
  const { TetherSocket } = require("../../../src/tether/service/dashboard/tether.js");
  const make = (opts = {}) => new TetherSocket("ws://x/api/live", { WebSocket: FakeWS, random: () => 1, ...opts });
  const open = () => sockets.filter((s) => s.readyState <= 1).length;
  return { advance, nextSocket, sockets, make, open, now: () => now };
}

test("connect() is single flight: repeated calls open one socket", () => {
  const w = world();
  const s = w.make();
  s.connect(); s.connect(); s.connect();
  assert.equal(w.sockets.length, 1);
  w.sockets[0].accept();
  s.connect();
  assert.equal(w.sockets.length, 1);
});

test("accept-then-close peer: attempts are spaced by a growing, capped backoff", () => {
  const w = world();
  const s = w.make({ baseDelay: 500, maxDelay: 4000 });
  s.connect();
  const starts = [];
  for (let i = 0; i < 6; i++) {
    const sock = w.sockets.at(-1);
    starts.push(w.now());
    sock.accept();
    sock.serverClose(1011, "boom");
    w.nextSocket();
  }
  const gaps = starts.slice(1).map((t, i) => t - starts[i]);
  assert.deepEqual(gaps, [500, 1000, 2000, 4000, 4000]);
});

test("the backoff resets only after stableAfter of uptime", () => {
  const w = world();
  const s = w.make({ baseDelay: 500, stableAfter: 10000 });
  s.connect();
  for (let i = 0; i < 3; i++) { w.sockets.at(-1).serverClose(1006); w.nextSocket(); }
  w.sockets.at(-1).accept();
  w.advance(10001);
  w.sockets.at(-1).serverClose(1006);
  assert.equal(s.nextDelay, 500);
});

test("after maxAttempts the client stops, and reconnectNow() works again", () => {
  const w = world();
  const s = w.make({ maxAttempts: 3 });
  s.connect();
  for (let i = 0; i < 5; i++) { w.sockets.at(-1)?.serverClose(1006); w.nextSocket(); }
  assert.equal(w.sockets.length, 3);
  assert.equal(s.state, "failed");
  w.advance(600000);
  assert.equal(w.sockets.length, 3);
  s.reconnectNow();
  assert.equal(w.sockets.length, 4);
  assert.equal(s.state, "connecting");
});

test("an auth close stops reconnection for good and exposes the code and reason", () => {
  const w = world();
  const s = w.make();
  s.connect();
  w.sockets[0].accept();
  w.sockets[0].serverClose(4401, "bad token");
  w.advance(3600000);
  assert.equal(w.sockets.length, 1);
  assert.equal(s.state, "failed");
  assert.equal(s.lastCloseCode, 4401);
  assert.equal(s.lastCloseReason, "bad token");
});

test("close 1013 waits at least the server's hint before the next attempt", () => {
  const w = world();
  const s = w.make({ random: () => 0 });
  s.connect();
  w.sockets[0].accept();
  w.sockets[0].serverClose(1013, "try again later: retry after 5");
  w.advance(4999);
  assert.equal(w.sockets.length, 1);
  w.advance(1);
  assert.equal(w.sockets.length, 2);
});

test("a missing pong closes the socket and schedules a reconnect", () => {
  const w = world();
  const s = w.make({ heartbeatInterval: 1000, heartbeatTimeout: 500 });
  s.connect();
  w.sockets[0].accept();
  w.advance(1000);
  assert.equal(w.sockets[0].sent.at(-1).type, "ping");
  w.advance(500);
  assert.equal(s.lastCloseReason, "heartbeat timeout");
  assert.equal(s.state, "backing_off");
  assert.ok(w.nextSocket());
  assert.equal(w.sockets.length, 2);
});

test("a pong in time keeps the connection", () => {
  const w = world();
  const s = w.make({ heartbeatInterval: 1000, heartbeatTimeout: 500 });
  s.connect();
  w.sockets[0].accept();
  for (let i = 0; i < 5; i++) {
    w.advance(1000);
    w.sockets[0].push({ type: "pong", t: w.sockets[0].sent.at(-1).t });
  }
  assert.equal(s.state, "open");
  assert.equal(w.sockets.length, 1);
});

test("hello carries the last event id and replayed duplicates are dropped", () => {
  const w = world();
  const s = w.make({ token: "t0k" });
  const seen = [];
  s.addEventListener("event", (e) => seen.push(e.detail.id));
  s.connect();
  w.sockets[0].accept();
  assert.deepEqual(w.sockets[0].sent[0], { type: "hello", token: "t0k", last_event_id: null });
  w.sockets[0].push({ type: "event", id: 1, event: {} });
  w.sockets[0].push({ type: "event", id: 2, event: {} });
  w.sockets[0].serverClose(1012);
  w.nextSocket();
  w.sockets[1].accept();
  assert.equal(w.sockets[1].sent[0].last_event_id, 2);
  w.sockets[1].push({ type: "event", id: 2, event: {} });
  w.sockets[1].push({ type: "event", id: 3, event: {} });
  assert.deepEqual(seen, [1, 2, 3]);
});

test("close() is final: no reconnect, ever", () => {
  const w = world();
  const s = w.make();
  s.connect();
  w.sockets[0].accept();
  s.close();
  w.advance(3600000);
  assert.equal(w.sockets.length, 1);
  assert.equal(s.state, "closed");
  s.connect();
  assert.equal(w.sockets.length, 1);
});

// A page's window and document, just enough for visibility and network events.
function page() {
  const win = new EventTarget();
  const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
  globalThis.window = win;
  globalThis.document = doc;
  const setVisible = (visible) => {
    doc.visibilityState = visible ? "visible" : "hidden";
    doc.dispatchEvent(new Event("visibilitychange"));
  };
  const done = () => { delete globalThis.window; delete globalThis.document; };
  return { win, setVisible, done };
}

test("a hidden tab closes the socket and makes no attempt; visible again reconnects at once", () => {
  const p = page();
  try {
    const w = world();
    const s = w.make();
    s.connect();
    w.sockets[0].accept();
    p.setVisible(false);
    assert.equal(s.state, "paused");
    assert.equal(w.open(), 0);
    w.advance(3600000); // an hour hidden: not one attempt
    assert.equal(w.sockets.length, 1);
    p.setVisible(true);
    assert.equal(w.sockets.length, 2);
    assert.equal(s.state, "connecting");
    // hidden while waiting out a backoff: the pending attempt is dropped too
    w.sockets[1].serverClose(1006);
    assert.equal(s.state, "backing_off");
    p.setVisible(false);
    w.advance(3600000);
    assert.equal(w.sockets.length, 2);
    s.connect(); // a page calling connect() while hidden stays paused
    assert.equal(w.sockets.length, 2);
    assert.equal(s.state, "paused");
  } finally {
    p.done();
  }
});

test("the online event skips the rest of the backoff, once (single flight)", () => {
  const p = page();
  try {
    const w = world();
    const s = w.make({ baseDelay: 10000, maxDelay: 60000 });
    s.connect();
    w.sockets[0].serverClose(1006); // never opened: backing off up to 10 s
    assert.equal(s.state, "backing_off");
    p.win.dispatchEvent(new Event("online"));
    p.win.dispatchEvent(new Event("online"));
    assert.equal(w.sockets.length, 2);
    assert.equal(w.open(), 1);
    w.sockets[1].accept();
    w.advance(12000); // past the 10 s backoff: its cancelled timer never fires a second socket
    assert.equal(w.sockets.length, 2);
    // online while connected changes nothing
    p.win.dispatchEvent(new Event("online"));
    assert.equal(w.sockets.length, 2);
    assert.equal(s.state, "open");
  } finally {
    p.done();
  }
});
