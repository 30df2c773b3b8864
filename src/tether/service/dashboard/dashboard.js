/* tether dashboard: a live table of sessions over the service's /api/live channel (tether.js). */
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const state = { sessions: new Map(), token: sessionStorage.getItem("tether.token") || "", recovery: [] };
  const BUCKET_MS = 10000, BUCKETS = 36, BACKFILL = 60;

  async function api(path, opts = {}) {
    const headers = Object.assign({ "Content-Type": "application/json" }, opts.headers || {});
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const res = await fetch(path, Object.assign({}, opts, { headers }));
    if (res.status === 401) { askToken("The API refused the token (401)."); throw new Error("unauthorized"); }
    if (!res.ok) {
      let msg = res.statusText;
      try { msg = (await res.json()).error.message; } catch (_) {}
      throw new Error(msg);
    }
    return res.status === 204 ? null : res.json();
  }

  // Every distinct refusal since the last sign-in (the API's 401 and the live channel's close code
  // can arrive in either order; neither may hide the other).
  const refusals = new Set();
  function askToken(message) {
    if (message) refusals.add(message);
    $("#token-error").textContent = [...refusals].join(" · ");
    const dlg = $("#token-dialog");
    if (!dlg.open) dlg.showModal();
  }
  $("#token-form").addEventListener("submit", () => {
    refusals.clear();
    state.token = $("#token-input").value.trim();
    sessionStorage.setItem("tether.token", state.token);
    if (live) live.close();
    start();
  });

  const fmtDur = (s) => {
    if (s == null || !isFinite(s)) return "–";
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
  };
  const text = (v) => (v == null || v === "" ? "–" : String(v));

  // Rows are made once per session and then updated in place: rebuilding them on every event (a
  // heartbeat per session every few seconds) would swallow clicks that land during a rebuild.
  const rowEls = new Map();
  function rowFor(id) {
    let tr = rowEls.get(id);
    if (tr) return tr;
    tr = document.createElement("tr");
    tr.dataset.session = id;
    tr.innerHTML = `<td class="id"></td><td class="kind"></td><td><span class="state"></span></td>
      <td class="uptime"></td><td class="attempts"></td><td class="close"></td><td class="err"></td><td class="queue"></td>
      <td class="actions"><button class="restart">Restart</button> <button class="logout">Logout</button></td>`;
    tr.querySelector(".id").textContent = id;
    tr.querySelector(".restart").onclick = () => act(id, "restart");
    tr.querySelector(".logout").onclick = () => act(id, "logout");
    rowEls.set(id, tr);
    return tr;
  }
  const setText = (el, value) => { if (el.textContent !== value) el.textContent = value; };

  function fillRow(tr, s) {
    const st = s.stats || {};
    const upSince = st.up_since ?? s.up_since;
    const close = st.last_close_code != null ? `${st.last_close_code} ${st.last_close_reason || ""}`.trim() : "–";
    // In a cluster every node lists every session; say which node runs it.
    setText(tr.querySelector(".kind"), s.node ? `${s.kind || ""} @ ${s.node}` : s.kind || "");
    const badge = tr.querySelector(".state");
    setText(badge, s.state);
    badge.className = "state state-" + s.state;
    const up = tr.querySelector(".uptime");
    if (s.state === "connected" && upSince) {
      up.dataset.since = upSince;
      setText(up, fmtDur(Date.now() / 1000 - upSince));
    } else {
      delete up.dataset.since;
      setText(up, "–");
    }
    setText(tr.querySelector(".attempts"), text(st.attempts));
    const closeEl = tr.querySelector(".close");
    setText(closeEl, close);
    closeEl.title = close;
    const err = tr.querySelector(".err");
    setText(err, text(st.last_error));
    err.title = st.last_error || "";
    setText(tr.querySelector(".queue"), text(s.queue_depth ?? st.queue_depth ?? st.buffered));
    tr.querySelector(".logout").disabled = s.desired === "logged_out";
  }

  function render() {
    const tbody = $("#sessions tbody");
    const rows = [...state.sessions.values()].sort((a, b) => a.id.localeCompare(b.id));
    for (const [id, tr] of rowEls) if (!state.sessions.has(id)) { tr.remove(); rowEls.delete(id); }
    rows.forEach((s, i) => {
      const tr = rowFor(s.id);
      fillRow(tr, s);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    const counts = {};
    for (const s of rows) counts[s.state] = (counts[s.state] || 0) + 1;
    $("#summary").innerHTML = "";
    for (const [label, n] of [["sessions", rows.length], ["connected", counts.connected || 0],
        ["reconnecting", (counts.backing_off || 0) + (counts.connecting || 0)], ["failed", counts.failed || 0]]) {
      const d = document.createElement("div");
      d.innerHTML = `<b></b><span class="muted"></span>`;
      d.querySelector("b").textContent = n;
      d.querySelector("span").textContent = label;
      d.dataset.stat = label;
      $("#summary").appendChild(d);
    }
    drawChart();
  }

  async function act(id, action) {
    try {
      await api(`/api/sessions/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      logLine(`${action} requested for ${id}`);
      refresh();
    } catch (e) { logLine(`${action} ${id} failed: ${e.message}`); }
  }

  let refreshTimer = null;
  async function refresh() {
    try {
      const data = await api("/api/sessions");
      const list = Array.isArray(data) ? data : data.sessions || data.items || [];
      state.sessions = new Map(list.map((s) => [s.id, s]));
      render();
    } catch (_) {}
    try {
      const alerts = await api("/api/alerts");
      const items = Array.isArray(alerts) ? alerts : alerts.alerts || [];
      const ul = $("#alerts");
      ul.replaceChildren();
      for (const a of items.filter((a) => (a.state || a.status) !== "resolved")) {
        // "SessionDown · ws-2", then the state and severity; the labels that say which thing, not the
        // ones that repeat the rule, and the summary as the tooltip.
        const labels = Object.entries(a.labels || {})
          .filter(([k]) => k !== "alertname" && k !== "severity").map(([, v]) => v);
        const li = document.createElement("li");
        li.className = a.state || a.status || "firing";
        li.innerHTML = `<b></b> <span class="muted"></span>`;
        li.querySelector("b").textContent = [a.rule || a.name || "alert", ...labels].join(" · ");
        li.querySelector("span").textContent = [a.state, a.severity, a.silenced ? "silenced" : ""].filter(Boolean).join(", ");
        li.title = a.summary || "";
        ul.appendChild(li);
      }
      if (!ul.children.length) ul.innerHTML = `<li class="muted">none</li>`;
    } catch (_) {}
  }
  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 300);
  }

  // at: the event's own time in seconds (replayed events happened before they arrived).
  function logLine(msg, id, at, older = false) {
    const li = document.createElement("li");
    if (id != null) li.dataset.id = id;
    const when = at ? new Date(at * 1000) : new Date();
    li.textContent = `${id != null ? "#" + id + "  " : ""}${when.toLocaleTimeString()}  ${msg}`;
    const ol = $("#events");
    older ? ol.append(li) : ol.prepend(li);
    while (ol.children.length > 300) ol.lastChild.remove();
  }

  function describe(name, ev, sid) {
    const detail = ev.reason ? ` ${ev.reason}`
      : ev.code ? ` code ${ev.code}`
      : name === "connected" && ev.downtime > 0 ? ` after ${(+ev.downtime).toFixed(1)} s down`
      : name === "connecting" && ev.attempt ? ` attempt ${ev.attempt}`
      : ev.delay != null ? ` in ${(+ev.delay).toFixed(1)} s` : "";
    return `[${sid || "service"}] ${name}${detail}`;
  }

  // The first time the page gets a cursor, show what happened just before it: the last events in the
  // log and the chart's reconnects. They are history, not "received" (ids <= cursor never overlap live).
  let backfilled = false;
  async function backfill(cursor) {
    if (backfilled || cursor == null) return;
    backfilled = true;
    try {
      const data = await api(`/api/events/history?since=${Math.max(0, cursor - 1000)}&limit=1000`);
      const events = (data.events || []).filter((e) => e.id <= cursor);
      for (const e of events) {
        const d = e.data || {};
        if (e.type === "link.connected" && d.downtime > 0) noteReconnect(e.at, d.downtime);
      }
      for (const e of events.slice(-BACKFILL).reverse()) {
        logLine(describe(e.type.slice(e.type.indexOf(".") + 1), e.data || {}, e.session), e.id, e.at, true);
      }
      drawChart();
    } catch (_) {}
  }

  // Reconnects ({t: ms, downtime: s}) in the chart's window, whatever their source (live or backfill).
  function noteReconnect(atSeconds, downtime) {
    const t = atSeconds ? atSeconds * 1000 : Date.now();
    if (t < Date.now() - BUCKETS * BUCKET_MS) return;
    state.recovery.push({ t, downtime });
    state.recovery.sort((a, b) => a.t - b.t);
  }
  function buckets(now = Date.now()) {
    const end = Math.floor(now / BUCKET_MS);
    const bs = Array.from({ length: BUCKETS }, () => ({ reconnects: 0, recovery: [] }));
    while (state.recovery.length && state.recovery[0].t < (end - BUCKETS + 1) * BUCKET_MS) state.recovery.shift();
    for (const r of state.recovery) {
      const i = BUCKETS - 1 - (end - Math.floor(r.t / BUCKET_MS));
      if (i >= 0 && i < BUCKETS) { bs[i].reconnects += 1; bs[i].recovery.push(r.downtime); }
    }
    return bs;
  }

  function onEvent(msg) {
    received.push(msg.id);
    if (received.length > 10000) received.splice(0, received.length - 10000);
    const ev = msg.event || {};
    const sid = ev.session;
    const type = ev.type || ev.kind || "event";
    // A reconnect is a connection after a loss (downtime > 0); its downtime is the recovery time.
    if (type === "connected" && ev.downtime > 0) noteReconnect(ev.at, ev.downtime);
    const s = sid && state.sessions.get(sid);
    if (s && ev.state) { s.state = ev.state; render(); }
    logLine(describe(type, ev, sid), msg.id, ev.at);
    scheduleRefresh();
  }

  function drawChart() {
    const c = $("#chart"), g = c.getContext("2d");
    // Draw at the size the canvas is shown at (times the pixel ratio), or the text comes out stretched.
    const dpr = window.devicePixelRatio || 1;
    const W = c.clientWidth || 640, H = c.clientHeight || 200;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr);
      c.height = Math.round(H * dpr);
    }
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    const bs = buckets();
    const maxR = Math.max(1, ...bs.map((b) => b.reconnects));
    const rec = bs.map((b) => (b.recovery.length ? b.recovery.reduce((x, y) => x + y, 0) / b.recovery.length : null));
    const maxT = Math.max(1, ...rec.filter((x) => x != null));
    // Plot area inside margins for the axis labels: reconnects on the left, recovery seconds on the right.
    const L = 34, R = 40, T = 12, B = 20, pw = W - L - R, ph = H - T - B, bw = pw / BUCKETS;
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#222b36"; g.lineWidth = 1; g.fillStyle = "#7d8895";
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(T + ph * (1 - f)) + 0.5;
      g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
      g.textAlign = "right"; g.fillText(String(+(maxR * f).toFixed(1)), L - 6, y + 4);
      g.textAlign = "left"; g.fillText((maxT * f).toFixed(1) + " s", L + pw + 6, y + 4);
    }
    g.textAlign = "left"; g.fillText(`−${(BUCKETS * BUCKET_MS) / 60000} min`, L, H - 5);
    g.textAlign = "right"; g.fillText("now", L + pw, H - 5);
    g.fillStyle = "#d29922";
    bs.forEach((b, i) => {
      const h = (b.reconnects / maxR) * ph;
      if (h > 0) g.fillRect(L + i * bw + 1, T + ph - h, Math.max(1, bw - 2), h);
    });
    g.strokeStyle = "#58a6ff"; g.fillStyle = "#58a6ff"; g.lineWidth = 2; g.beginPath();
    let started = false;
    const pts = [];
    rec.forEach((t, i) => {
      if (t == null) return;
      const x = L + i * bw + bw / 2, y = T + ph - (t / maxT) * ph;
      pts.push([x, y]);
      started ? g.lineTo(x, y) : g.moveTo(x, y); started = true;
    });
    g.stroke();
    for (const [x, y] of pts) { g.beginPath(); g.arc(x, y, 2.5, 0, 2 * Math.PI); g.fill(); }
    if (!pts.length) {
      g.fillStyle = "#7d8895"; g.textAlign = "center";
      g.fillText("no reconnects in the last " + (BUCKETS * BUCKET_MS) / 60000 + " minutes", L + pw / 2, T + ph / 2);
    }
    g.textAlign = "left";
  }

  let live = null;
  // Ids of the live events this page received, in order (tests check they are contiguous).
  const received = [];
  // The live channel's recent transitions ({state, attempt, delay}): what the reconnect loop did.
  const liveLog = [];
  function start() {
    refresh();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    // window.tetherOptions (set before this script runs) overrides the client's timings, e.g. in tests.
    const opts = Object.assign({ connectDelay: 200 }, window.tetherOptions || {}, { token: state.token || null });
    live = new Tether.TetherSocket(`${proto}//${location.host}/api/live`, opts);
    window.tetherLive = live; // for tests and the curious
    window.tetherDashboard = { received, live: liveLog };
    live.addEventListener("event", (e) => onEvent(e.detail));
    live.addEventListener("reset", (e) => { refresh(); backfill(e.detail.last_event_id); });
    live.addEventListener("state", (e) => {
      const st = e.detail.state;
      liveLog.push({ state: st, attempt: e.detail.attempt ?? null, delay: e.detail.delay ?? null, total: live.totalAttempts });
      if (liveLog.length > 500) liveLog.shift();
      $("#live").dataset.state = st;
      $("#live-state").textContent = st === "backing_off" ? `retrying in ${(e.detail.delay / 1000).toFixed(1)} s` : st;
      $("#live-close").textContent = live.lastCloseCode != null ? `last close ${live.lastCloseCode} ${live.lastCloseReason}` : "";
      $("#live-reconnect").hidden = st !== "failed";
      if (st === "failed" && e.detail.auth) askToken(`Live channel refused: ${live.lastCloseCode} ${live.lastCloseReason}`);
      if (st === "open") refresh();
    });
    $("#live-reconnect").onclick = () => live.reconnectNow();
    live.connect();
  }
  // uptime ticks without rebuilding rows (a rebuild under the pointer would swallow clicks)
  setInterval(() => {
    for (const td of document.querySelectorAll("td.uptime[data-since]")) td.textContent = fmtDur(Date.now() / 1000 - Number(td.dataset.since));
    drawChart();
  }, 1000);
  start();
})();
