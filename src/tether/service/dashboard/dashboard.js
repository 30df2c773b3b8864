/* tether dashboard: a live table of sessions over the service's /api/live channel (tether.js). */
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const state = { sessions: new Map(), token: sessionStorage.getItem("tether.token") || "", buckets: [], recovery: [] };
  const BUCKET_MS = 10000, BUCKETS = 36;

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

  function sessionRow(s) {
    const st = s.stats || {};
    const upSince = st.up_since ?? s.up_since;
    const uptime = upSince ? Date.now() / 1000 - upSince : null;
    const close = st.last_close_code != null ? `${st.last_close_code} ${st.last_close_reason || ""}` : "–";
    const tr = document.createElement("tr");
    tr.dataset.session = s.id;
    tr.innerHTML = `<td class="id"></td><td class="kind"></td><td><span class="state"></span></td>
      <td class="uptime"></td><td class="attempts"></td><td class="close"></td><td class="err"></td><td class="queue"></td>
      <td><button class="restart">Restart</button> <button class="logout">Logout</button></td>`;
    tr.querySelector(".id").textContent = s.id;
    tr.querySelector(".kind").textContent = s.kind || "";
    const badge = tr.querySelector(".state");
    badge.textContent = s.state;
    badge.className = "state state-" + s.state;
    const up = tr.querySelector(".uptime");
    if (s.state === "connected" && upSince) up.dataset.since = upSince;
    up.textContent = s.state === "connected" ? fmtDur(uptime) : "–";
    tr.querySelector(".attempts").textContent = text(st.attempts);
    tr.querySelector(".close").textContent = close.trim();
    const err = tr.querySelector(".err");
    err.textContent = text(st.last_error);
    err.title = st.last_error || "";
    tr.querySelector(".queue").textContent = text(s.queue_depth ?? st.queue_depth ?? st.buffered);
    tr.querySelector(".restart").onclick = () => act(s.id, "restart");
    tr.querySelector(".logout").onclick = () => act(s.id, "logout");
    return tr;
  }

  function render() {
    const tbody = $("#sessions tbody");
    const rows = [...state.sessions.values()].sort((a, b) => a.id.localeCompare(b.id));
    tbody.replaceChildren(...rows.map(sessionRow));
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
        const li = document.createElement("li");
        li.className = a.state || a.status || "firing";
        li.textContent = `${a.rule || a.name || "alert"} ${a.labels ? JSON.stringify(a.labels) : ""} (${a.severity || ""})`;
        ul.appendChild(li);
      }
      if (!ul.children.length) ul.innerHTML = `<li class="muted">none</li>`;
    } catch (_) {}
  }
  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 300);
  }

  function logLine(msg, id) {
    const li = document.createElement("li");
    if (id != null) li.dataset.id = id;
    li.textContent = `${new Date().toLocaleTimeString()}  ${msg}`;
    const ol = $("#events");
    ol.prepend(li);
    while (ol.children.length > 300) ol.lastChild.remove();
  }

  function bucket(now = Date.now()) {
    const b = Math.floor(now / BUCKET_MS);
    const last = state.buckets[state.buckets.length - 1];
    if (!last || last.b !== b) state.buckets.push({ b, reconnects: 0, recovery: [] });
    while (state.buckets.length > BUCKETS) state.buckets.shift();
    return state.buckets[state.buckets.length - 1];
  }

  function onEvent(msg) {
    received.push(msg.id);
    if (received.length > 10000) received.splice(0, received.length - 10000);
    const ev = msg.event || {};
    const sid = ev.session;
    const type = ev.type || ev.kind || "event";
    if (type === "connecting" || type === "backing_off") bucket().reconnects += type === "connecting" && ev.attempt > 1 ? 1 : 0;
    if (type === "connected" && ev.downtime > 0) bucket().recovery.push(ev.downtime);
    const s = sid && state.sessions.get(sid);
    if (s && ev.state) { s.state = ev.state; render(); }
    const detail = ev.reason ? ` ${ev.reason}` : ev.code ? ` code ${ev.code}` : "";
    logLine(`[${sid || "service"}] ${type}${detail}`, msg.id);
    scheduleRefresh();
  }

  function drawChart() {
    const c = $("#chart"), g = c.getContext("2d");
    const W = c.width, H = c.height;
    g.clearRect(0, 0, W, H);
    bucket();
    const bs = state.buckets;
    const maxR = Math.max(1, ...bs.map((b) => b.reconnects));
    const rec = bs.map((b) => (b.recovery.length ? b.recovery.reduce((x, y) => x + y, 0) / b.recovery.length : null));
    const maxT = Math.max(1, ...rec.filter((x) => x != null));
    const bw = W / BUCKETS;
    g.fillStyle = "#d29922";
    bs.forEach((b, i) => { const h = (b.reconnects / maxR) * (H - 20); g.fillRect(i * bw + 2, H - h, bw - 4, h); });
    g.strokeStyle = "#58a6ff"; g.lineWidth = 2; g.beginPath();
    let started = false;
    rec.forEach((t, i) => {
      if (t == null) return;
      const x = i * bw + bw / 2, y = H - (t / maxT) * (H - 20);
      started ? g.lineTo(x, y) : g.moveTo(x, y); started = true;
    });
    g.stroke();
    g.fillStyle = "#7d8895"; g.font = "11px sans-serif";
    g.fillText(`max ${maxR} reconnects · ${maxT.toFixed(1)} s`, 6, 12);
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
    live.addEventListener("reset", () => refresh());
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
