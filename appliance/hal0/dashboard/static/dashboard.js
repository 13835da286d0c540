// hal0 dashboard: the little JavaScript the server-rendered pages need.
// 1. [data-refresh] parts re-fetch their server-rendered HTML every 2 s (no manual reload),
//    keeping what the user typed and where the focus was.
// 2. Approve/Deny forms call the approval API without X-hal0-Agent: the human channel.
// 3. The MCP tab probes /mcp/* for real from this browser (same-origin fetch sends the Origin
//    and Host the gate checks), so it shows what a client here would really get.
// 4. Through the reverse proxy, the Overview lists every box of the fleet (the proxy's
//    fleet/boxes.json and each box's /health), so a straggler (other version or config) stands out.
// Every URL is relative: <base href> (set by the server) makes them work under a proxy prefix.
"use strict";

(() => {
  const POLL_MS = 2000;
  const PROTOCOL = "2025-06-18";

  function announce(text) {
    const region = document.getElementById("announce");
    if (!region) return;
    region.textContent = text;
    clearTimeout(announce.timer);
    announce.timer = setTimeout(() => { region.textContent = ""; }, 6000);
  }

  // -- live fragments ---------------------------------------------------------------------------

  function snapshot(container) {
    const values = {};
    container.querySelectorAll("input[id], textarea[id], select[id]").forEach((field) => { values[field.id] = field.value; });
    const active = document.activeElement;
    const focus = active && container.contains(active) && active.id ? active.id : null;
    const selection = focus && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
    return { values, focus, selection };
  }

  function restore(container, state) {
    for (const [id, value] of Object.entries(state.values)) {
      const field = document.getElementById(id);
      if (field && container.contains(field)) field.value = value;
    }
    const focused = state.focus && document.getElementById(state.focus);
    if (focused) {
      focused.focus({ preventScroll: true });
      if (state.selection && typeof focused.setSelectionRange === "function") focused.setSelectionRange(...state.selection);
    }
  }

  async function refresh(container) {
    let response;
    try {
      response = await fetch(container.dataset.refresh, { cache: "no-store", headers: { Accept: "text/html" } });
    } catch {
      container.classList.add("stale");
      return;
    }
    container.classList.toggle("stale", !response.ok);
    if (!response.ok) return;
    const html = await response.text();
    if (html === container.dataset.last) return; // unchanged: leave the DOM (and a half-typed note) alone
    const state = snapshot(container);
    container.innerHTML = html;
    container.dataset.last = html;
    restore(container, state);
  }

  function updateBadge() {
    // The tab's pending count is rendered with the page; a live fragment that knows better updates it.
    const counter = document.querySelector("[data-refresh] [data-pending]");
    const tab = document.getElementById("tab-approvals");
    if (!counter || !tab) return;
    const count = Number(counter.dataset.pending);
    tab.querySelectorAll(".badge").forEach((badge) => badge.remove());
    if (count > 0) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.title = "pending approvals";
      badge.innerHTML = `${count}<span class="sr"> pending</span>`;
      tab.append(" ", badge);
    }
  }

  function refreshAll() {
    return Promise.all([...document.querySelectorAll("[data-refresh]")].map(refresh)).then(updateBadge);
  }

  function poll() {
    const next = () => setTimeout(poll, POLL_MS);
    if (document.hidden) { next(); return; }
    refreshAll().finally(next);
  }

  // -- approve / deny ---------------------------------------------------------------------------

  async function decide(form, decision) {
    const id = form.dataset.decide;
    const note = form.elements.note ? form.elements.note.value.trim() : "";
    const buttons = form.querySelectorAll("button");
    buttons.forEach((button) => { button.disabled = true; });
    try {
      const response = await fetch(`api/approvals/${encodeURIComponent(id)}/${decision}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(note ? { note } : {}),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        announce(`${body.tool} from ${body.agent}: ${body.state}${body.error ? ` (${body.error})` : ""}`);
      } else {
        announce(`Could not ${decision}: ${(body.error && body.error.message) || response.status}`);
      }
    } catch (error) {
      announce(`Could not ${decision}: ${error}`);
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
      await refreshAll();
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-decide]");
    if (!form) return;
    event.preventDefault();
    const decision = event.submitter && event.submitter.value;
    if (decision === "approve" || decision === "deny") decide(form, decision);
  });

  // -- MCP probe --------------------------------------------------------------------------------

  function parseMessage(text, type) {
    // Streamable HTTP answers either JSON or one SSE event carrying the JSON-RPC response.
    if ((type || "").includes("text/event-stream")) {
      const data = text.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim());
      for (const chunk of data.reverse()) {
        try { const message = JSON.parse(chunk); if ("result" in message || "error" in message) return message; } catch { /* next */ }
      }
      return null;
    }
    try { return text ? JSON.parse(text) : null; } catch { return null; }
  }

  async function rpc(url, message, session, agent) {
    const headers = { "Content-Type": "application/json", Accept: "application/json, text/event-stream" };
    if (session) { headers["Mcp-Session-Id"] = session.id; headers["MCP-Protocol-Version"] = session.protocol; }
    if (agent) headers["X-hal0-Agent"] = agent;
    const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(message), cache: "no-store" });
    const text = await response.text();
    return { response, text, message: parseMessage(text, response.headers.get("content-type")) };
  }

  function gateHint(status) {
    const host = location.host;
    if (status === 421) return `refused by the gate (421 Invalid Host header): add ${host} to HAL0_MCP_ALLOWED_HOSTS (or mcp.allowed_hosts)`;
    return `refused by the gate (403 Invalid Origin header): add ${location.origin} to HAL0_MCP_ALLOWED_ORIGINS, or add ${host} to the allowed hosts`;
  }

  async function probe(target) {
    const url = target.dataset.probe;
    const agent = target.dataset.agent;
    target.className = "probe";
    target.textContent = "checking…";
    try {
      const init = await rpc(url, { jsonrpc: "2.0", id: 1, method: "initialize",
        params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: "hal0-dashboard", version: "1" } } }, null, agent);
      const status = init.response.status;
      if (status === 421 || status === 403) throw new Error(gateHint(status));
      if (!init.response.ok || !init.message || !init.message.result) {
        const reason = (init.message && init.message.error && init.message.error.message) || init.text.slice(0, 200);
        throw new Error(`HTTP ${status}: ${reason}`);
      }
      const result = init.message.result;
      const session = { id: init.response.headers.get("mcp-session-id"), protocol: result.protocolVersion };
      try {
        if (session.id) await rpc(url, { jsonrpc: "2.0", method: "notifications/initialized" }, session, agent);
        const tools = await rpc(url, { jsonrpc: "2.0", id: 2, method: "tools/list", params: {} }, session, agent);
        const names = ((tools.message && tools.message.result && tools.message.result.tools) || []).map((tool) => tool.name);
        target.className = "probe good";
        target.textContent = `reachable: ${result.serverInfo.name} ${result.serverInfo.version}, protocol ${result.protocolVersion}; ` +
          `tools/list as ${agent} gives ${names.length} tool${names.length === 1 ? "" : "s"}: ${names.join(", ") || "none"}`;
        target.dataset.tools = names.join(",");
      } finally {
        if (session.id) {
          await fetch(url, { method: "DELETE", headers: { "Mcp-Session-Id": session.id, "MCP-Protocol-Version": session.protocol } }).catch(() => {});
        }
      }
    } catch (error) {
      target.className = "probe bad";
      target.textContent = `not reachable from this browser: ${error.message || error}`;
    }
    target.dataset.done = "1";
  }

  function probeAll() {
    document.querySelectorAll("[data-this-host]").forEach((el) => { el.textContent = location.host; });
    document.querySelectorAll("[data-this-origin]").forEach((el) => { el.textContent = location.origin; });
    return Promise.all([...document.querySelectorAll("[data-probe]")].map(probe));
  }

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-probe-again]")) probeAll();
  });

  // -- the fleet, as the proxy sees it ----------------------------------------------------------

  const FLEET_MS = 5000;

  async function fetchJson(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  function cell(row, label, text, className) {
    const td = document.createElement("td");
    td.dataset.label = label;
    td.textContent = text;
    if (className) td.className = className;
    row.append(td);
  }

  // Returns false once it is clear there is no fleet here (hal0's own empty answer): polling stops.
  async function fleet(section) {
    let boxes, drained;
    try {
      ({ boxes, drained = [] } = await fetchJson("fleet/boxes.json"));
    } catch {
      return true; // a failed request (the proxy reloading, say): try again on the next round
    }
    if (!Array.isArray(boxes) || boxes.length === 0) return false; // hal0's own port: stays hidden
    section.hidden = false;
    const healths = await Promise.all(boxes.map((box) => fetchJson(`fleet/${box}/health`).catch((error) => ({ error: String(error.message || error) }))));
    // What most reachable boxes run; any other version or config digest is a straggler.
    const counts = new Map();
    for (const health of healths) {
      if (health.error) continue;
      const key = `${health.version} ${health.config_digest}`;
      counts.set(key, (counts.get(key) || 0) + 1);
    }
    const majority = [...counts.entries()].sort((a, b) => b[1] - a[1])[0];
    const rows = boxes.map((box, index) => {
      const health = healths[index];
      const row = document.createElement("tr");
      row.dataset.box = box;
      const name = document.createElement("th");
      name.scope = "row";
      name.dataset.label = "Box";
      name.textContent = health.hostname || "?";
      row.append(name);
      cell(row, "Address", box);
      const out = drained.includes(box);
      cell(row, "Proxy", out ? "drained" : "in rotation", out ? "state-pending" : "state-ok");
      if (health.error) {
        cell(row, "Health", `unreachable (${health.error})`, "state-failed");
        cell(row, "Version", "—");
        cell(row, "Config", "—");
        cell(row, "Fleet", "—");
      } else {
        cell(row, "Health", health.status, `state-${health.status}`);
        cell(row, "Version", health.version);
        cell(row, "Config", health.config_digest);
        const same = majority && `${health.version} ${health.config_digest}` === majority[0];
        cell(row, "Fleet", same ? "in step" : "straggler", same ? "state-ok" : "state-pending");
        row.dataset.straggler = same ? "0" : "1";
      }
      return row;
    });
    document.getElementById("fleet-rows").replaceChildren(...rows);
    const down = healths.filter((health) => health.error).length;
    const stragglers = rows.filter((row) => row.dataset.straggler === "1").length;
    document.getElementById("fleet-summary").textContent =
      `${boxes.length} box${boxes.length === 1 ? "" : "es"}; ${drained.length} drained; ${down} unreachable; ` +
      `${stragglers} straggler${stragglers === 1 ? "" : "s"}` +
      (majority ? `; most run ${majority[0].replace(" ", ", config ")}` : "");
    section.dataset.done = "1";
    return true;
  }

  function pollFleet(section) {
    const next = () => setTimeout(() => pollFleet(section), FLEET_MS);
    if (document.hidden) { next(); return; }
    fleet(section).then((again) => { if (again) next(); }, next);
  }

  document.addEventListener("DOMContentLoaded", () => {
    probeAll();
    if (document.querySelector("[data-refresh]")) setTimeout(poll, POLL_MS);
    const section = document.querySelector("[data-fleet]");
    if (section) pollFleet(section);
  });
})();
