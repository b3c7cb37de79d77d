// Switchyard's dashboard: reads /dashboard/data and draws it. Plain JS, no build step, no libraries.
// Everything from the server is written with textContent or as SVG attributes, never as HTML.
"use strict";

(function () {
  const STORAGE = "switchyard.dashboard.key";
  const REFRESH_MS = 15000;
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#8b5cf6", "#ef4444", "#06b6d4", "#84cc16", "#ec4899", "#64748b"];
  const needsKey = document.querySelector('meta[name="switchyard-dashboard-auth"]').content === "key";
  const CIRCUIT_STATES = { closed: "closed", half_open: "half-open", open: "open" };
  const $ = (id) => document.getElementById(id);
  let timer = null;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function usd(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a >= 100) return "$" + v.toFixed(2);
    if (a >= 0.01) return "$" + v.toFixed(4);
    if (a === 0) return "$0";
    return "$" + v.toPrecision(3);
  }
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
  const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toString());

  function showLogin(message) {
    $("board").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("key").focus();
  }

  async function load() {
    const key = sessionStorage.getItem(STORAGE);
    if (needsKey && !key) {
      showLogin();
      return;
    }
    const headers = key ? { Authorization: "Bearer " + key } : {};
    let response;
    try {
      response = await fetch("dashboard/data?hours=" + encodeURIComponent($("hours").value), { headers, cache: "no-store" });
    } catch (err) {
      problem("The gateway did not answer: " + err.message);
      return;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(STORAGE);
      showLogin("That key is neither the admin key nor the viewer key.");
      return;
    }
    if (!response.ok) {
      problem("The gateway answered " + response.status + "; retrying.");
      return;
    }
    $("login").hidden = true;
    $("board").hidden = false;
    $("signout").hidden = !needsKey;
    $("problem").hidden = true;
    render(await response.json());
  }

  function problem(text) {
    $("problem").textContent = text;
    $("problem").hidden = false;
  }

  function render(d) {
    const replica = d.replica;
    $("subtitle").textContent = "router " + d.router.version + " · replica " + replica.host + " (pid " + replica.pid + ")";
    if (d.ledger_error) {
      // The store is down: the ledger's half cannot be read, this replica's half still can.
      problem(d.ledger_error + ". Latency, errors, circuits and versions below are this replica's, as of now.");
      for (const id of ["spend", "savings", "requests", "cache"]) $(id).textContent = "–";
      for (const id of ["spend-sub", "savings-sub", "requests-sub", "cache-sub"]) $(id).textContent = "store unavailable";
    } else {
      const t = d.total;
      $("spend").textContent = usd(t.cost_usd);
      $("spend-sub").textContent = (t.prompt_tokens + t.completion_tokens).toLocaleString() + " tokens";
      $("savings").textContent = usd(t.savings_usd);
      $("savings-sub").textContent = t.counterfactual_usd > 0
        ? pct(t.savings_usd / t.counterfactual_usd) + " of " + usd(t.counterfactual_usd) : "nothing routed yet";
      $("requests").textContent = t.requests.toLocaleString();
      $("requests-sub").textContent = "in the last " + $("hours").selectedOptions[0].textContent;
      $("cache").textContent = pct(d.cache.hit_ratio);
      $("cache-sub").textContent = d.cache.hits + " of " + d.cache.requests + " requests";
    }
    $("latency").textContent = ms(replica.latency_p50_ms) + " / " + ms(replica.latency_p99_ms) + " ms";
    $("latency-sub").textContent = "last " + replica.requests + " requests, this replica";
    const errorRate = replica.requests ? replica.client_error_rate + replica.server_error_rate : null;
    $("errors").textContent = pct(errorRate);
    $("errors-sub").textContent = "4xx " + pct(replica.client_error_rate) + " · 5xx " + pct(replica.server_error_rate);
    if (d.ledger_error) {
      $("chart").replaceChildren(el("p", "muted", "The spend ledger cannot be read while the store is down."));
      $("mix").replaceChildren(el("p", "muted", "The spend ledger cannot be read while the store is down."));
    } else {
      chart(d.spend_by_hour);
      mix(d.routing_mix);
    }
    deployments(d.deployments);
    versions(d.policies, d.router);
    $("footer").textContent = "Spend, savings, routing mix and cache hits: the durable ledger (" + d.store +
      " store), " + d.from + " to " + d.to + ". Latency, errors and circuits: this replica. Updated " +
      new Date().toLocaleTimeString() + ".";
  }

  function chart(hours) {
    // Drawn at the container's own width, so that the text is not stretched.
    const W = Math.max(320, $("chart").clientWidth || 1000), H = 220, left = 72, bottom = 22, top = 8;
    const box = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
                             "aria-label": "spend and savings by hour" });
    const peak = Math.max(...hours.map((h) => Math.max(h.cost_usd + Math.max(h.savings_usd, 0), 0)), 0) || 1;
    const y = (v) => H - bottom - (v / peak) * (H - bottom - top);
    for (const f of [0, 0.5, 1]) {
      box.appendChild(svg("line", { x1: left, x2: W, y1: y(peak * f), y2: y(peak * f), class: "axis" }));
      const label = svg("text", { x: left - 6, y: y(peak * f) + 4, "text-anchor": "end" });
      label.textContent = usd(peak * f);
      box.appendChild(label);
    }
    const slot = (W - left) / hours.length;
    const width = Math.max(1, slot * 0.8);
    hours.forEach((h, i) => {
      const x = left + i * slot + (slot - width) / 2;
      const saved = Math.max(h.savings_usd, 0);
      const title = svg("title");
      title.textContent = h.hour + ": spent " + usd(h.cost_usd) + ", saved " + usd(h.savings_usd) +
        " (" + h.requests + " requests)";
      const g = svg("g");
      g.appendChild(title);
      g.appendChild(svg("rect", { x, width, y: y(h.cost_usd), height: H - bottom - y(h.cost_usd), class: "spend" }));
      g.appendChild(svg("rect", { x, width, y: y(h.cost_usd + saved), height: y(h.cost_usd) - y(h.cost_usd + saved),
                                  class: "saved" }));
      box.appendChild(g);
      const every = Math.ceil(hours.length / 8);
      if (i % every === 0) {
        const centre = x + width / 2;
        const anchor = centre > W - 40 ? "end" : "middle";  // the last hour's label stays inside the chart
        const label = svg("text", { x: anchor === "end" ? W : centre, y: H - 6, "text-anchor": anchor });
        label.textContent = h.hour.slice(5, 13).replace("T", " ") + "h";
        box.appendChild(label);
      }
    });
    $("chart").replaceChildren(box);
  }

  function mix(rows) {
    const policies = new Map();
    const colours = new Map();
    for (const r of rows) {
      if (!r.requests) continue;
      const policy = r.policy || "(deployment named by the client)";
      const segment = r.plan_kind === "cache" ? "cache" : r.plan_kind + " → " + (r.deployment || "none");
      if (!colours.has(segment)) colours.set(segment, PALETTE[colours.size % PALETTE.length]);
      if (!policies.has(policy)) policies.set(policy, []);
      policies.get(policy).push({ segment, requests: r.requests });
    }
    const out = [];
    if (!policies.size) out.push(el("p", "muted", "No requests in this window."));
    for (const [policy, segments] of policies) {
      const total = segments.reduce((s, x) => s + x.requests, 0);
      const row = el("div", "mixrow");
      row.appendChild(el("span", null, policy + " (" + total + ")"));
      const bar = svg("svg", { viewBox: "0 0 1000 22", preserveAspectRatio: "none" });
      let x = 0;
      for (const s of segments) {
        const w = (1000 * s.requests) / total;
        const rect = svg("rect", { x, y: 0, width: w, height: 22, fill: colours.get(s.segment) });
        const title = svg("title");
        title.textContent = policy + ": " + s.segment + " " + s.requests + " (" + pct(s.requests / total) + ")";
        rect.appendChild(title);
        bar.appendChild(rect);
        x += w;
      }
      row.appendChild(bar);
      out.push(row);
    }
    const keys = el("p", "mixkeys");
    for (const [segment, colour] of colours) {
      const key = el("span", "mixkey");
      const swatch = el("span", "swatch");
      swatch.style.background = colour;
      key.append(swatch, segment);
      keys.appendChild(key);
    }
    out.push(keys);
    $("mix").replaceChildren(...out);
  }

  function deployments(health) {
    const body = $("deployments").tBodies[0];
    const rows = Object.entries(health).map(([name, h]) => {
      const tr = el("tr");
      // the three states of switchyard_circuit_state: a half-open circuit is not closed, its deployment failing
      const state = el("span", "badge " + h.circuit, CIRCUIT_STATES[h.circuit] || h.circuit);
      const circuit = el("td");
      circuit.appendChild(state);
      tr.append(el("td", null, name), circuit, el("td", "num", h.calls), el("td", "num", h.failures),
                el("td", "num", h.calls ? pct(h.failures / h.calls) : "–"),
                el("td", "num", h.latency_ewma_s === null ? "–" : ms(1000 * h.latency_ewma_s) + " ms"));
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function versions(policies, router) {
    const rows = policies.map((p) => {
      const tr = el("tr");
      tr.append(el("td", null, p.name), el("td", null, p.version), el("td", "muted", p.default ? "default" : ""));
      return tr;
    });
    $("versions").tBodies[0].replaceChildren(...rows);
    $("router").textContent = "router " + router.version +
      (router.version === router.configured_version ? " (as configured)" : " (promoted; configured " +
        router.configured_version + ")");
  }

  function schedule() {
    clearInterval(timer);
    timer = setInterval(load, REFRESH_MS);
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(STORAGE, $("key").value.trim());
    $("key").value = "";
    load();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(STORAGE);
    showLogin();
  });
  $("hours").addEventListener("change", load);
  load();
  schedule();
})();
