// The operators' console: reads /v1/admin/overview and /v1/admin/dead-letters with an admin
// token every few seconds and draws them. Everything the service sends is put in the page as
// text (textContent), never as markup: an error text from a legacy system is data.
"use strict";

(() => {
  const KEY = "approval-ledger.console.token";
  const REFRESH_MS = 5000;
  const ANALYTICS_MS = 30000;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (selector, root = document) => root.querySelector(selector);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function sv(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  // Formatting.
  const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.abs(seconds);
    if (s < 1) return `${s.toFixed(2)} s`;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    if (s < 86400 * 2) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  function ago(iso) {
    if (!iso) return "–";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    return seconds < 0 ? `in ${duration(-seconds)}` : `${duration(seconds)} ago`;
  }

  function when(iso) {
    if (!iso) return "–";
    return el("time", { datetime: iso, title: iso }, ago(iso));
  }

  const position = (p) => (p ? `tx\u00a0${p.tx_id} · #${p.global_id}` : "–");

  function lagClass(seconds) {
    if (seconds >= 60) return "bad";
    if (seconds >= 5) return "warn";
    return "good";
  }

  // Tables: each cell carries its column's label, which a phone's layout shows beside it.
  function fill(section, rows, columns, empty) {
    const table = $("table", section);
    const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    const body = $("tbody", table);
    if (rows.length === 0) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: labels.length, class: "empty muted" }, empty)));
      return;
    }
    body.replaceChildren(...rows.map((row) => el("tr", {}, columns.map((column, i) => cell(row, column, labels[i])))));
  }

  function cell(row, column, label) {
    const value = column.value(row);
    // One child, so that a phone's layout (the label beside the value) holds it whole.
    return el("td", { "data-label": label, class: [column.num ? "num" : "", column.class ? column.class(row) : ""].join(" ").trim() || null }, el("span", {}, value));
  }

  // Talking to the service.
  async function api(method, path) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, Accept: "application/json" },
      cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { status: response.status, ok: response.ok, body };
  }

  const reason = (answer) => (answer.body && answer.body.error ? `${answer.body.error.code}: ${answer.body.error.message}` : `HTTP ${answer.status}`);

  function say(text, error = false) {
    const message = $("#message");
    message.textContent = text;
    message.classList.toggle("error", error);
  }

  // The sections.
  function renderReaders(overview) {
    $("#feed-head").textContent = `Feed head: ${position(overview.feed_head)}`;
    fill($("#readers"), overview.readers, [
      { value: (r) => (r.name === "sweeper" ? [r.name, el("br"), el("small", { class: "muted" }, "follows the feed 30 s behind, by design")] : r.name) },
      { value: (r) => position(r.position) },
      { num: true, value: (r) => (r.lag_capped ? `≥ ${number(r.lag_events)}` : number(r.lag_events)) },
      { num: true, value: (r) => duration(r.lag_seconds), class: (r) => lagClass(r.lag_seconds) },
      { value: (r) => when(r.updated_at) },
    ], "No reader has a checkpoint yet.");
  }

  function renderRelay(overview) {
    const relay = overview.relay;
    const facts = [
      ["Broker connection", el("span", { class: relay.broker_connected ? "good" : "bad" }, relay.broker_connected ? "up" : "down"),
        relay.connection === "probe" ? " (checked by the console; this process runs no relay)" : ""],
      ["Position", position(relay.position)],
      ["Behind (events)", number(relay.lag_events)],
      ["Oldest unpublished", el("span", { class: lagClass(relay.lag_seconds) }, duration(relay.lag_seconds))],
    ];
    $("#relay .facts").replaceChildren(...facts.flatMap(([term, ...value]) => [el("dt", {}, term), el("dd", {}, ...value)]));
  }

  function renderQueues(overview) {
    const section = $("#queues");
    const note = $(".note", section);
    if (overview.queues === null) {
      note.textContent = `RabbitMQ cannot be asked: ${overview.queues_error || "unknown reason"}`;
      note.className = "note bad";
      fill(section, [], [], "No queue counts while RabbitMQ is unreachable.");
      return;
    }
    note.textContent = "";
    note.className = "note muted";
    fill(section, overview.queues, [
      { value: (q) => el("code", {}, q.name) },
      { num: true, value: (q) => number(q.messages_ready), class: (q) => (q.name.endsWith(".dead") && q.messages_ready > 0 ? "bad" : "") },
      { num: true, value: (q) => number(q.consumers) },
      { value: (q) => q.error || "" },
    ], "No queues.");
  }

  function renderDeliveries(overview) {
    fill($("#deliveries"), overview.deliveries, [
      { value: (d) => (d.channel === "push" ? "Push (every device)" : `${d.name || d.system} (${d.system})`) },
      { value: (d) => d.channel },
      { num: true, value: (d) => number(d.pending) },
      { num: true, value: (d) => number(d.retrying), class: (d) => (d.retrying > 0 ? "warn" : "") },
      { num: true, value: (d) => number(d.dead), class: (d) => (d.dead > 0 ? "bad" : "") },
      { value: (d) => d.last_error || "–" },
      { value: (d) => when(d.last_error_at) },
    ], "No deliveries.");
  }

  function renderSla(overview) {
    const sla = overview.sla;
    const section = $("#sla");
    $(".count", section).textContent = sla.overdue === 0 ? "No step is past its deadline." : `${number(sla.overdue)} step${sla.overdue === 1 ? "" : "s"} past the deadline${sla.overdue > sla.oldest.length ? `; the ${sla.oldest.length} longest overdue:` : ":"}`;
    $(".count", section).className = sla.overdue === 0 ? "count good" : "count bad";
    fill(section, sla.oldest, [
      { value: (o) => [o.title, el("br"), el("code", { class: "muted" }, o.request_id)] },
      { value: (o) => `${o.system} · ${o.external_ref}` },
      { value: (o) => `step ${o.step + 1}` },
      { value: (o) => [el("time", { datetime: o.due_at, title: o.due_at }, `overdue by ${duration((Date.now() - Date.parse(o.due_at)) / 1000)}`)] },
    ], "Nothing overdue.");
  }

  // Dead letters keep their rows from one refresh to the next, so a Retry button that has the
  // keyboard's focus keeps it.
  function renderDeadLetters(answer) {
    const section = $("#dead-letters");
    const body = $("tbody", section);
    const labels = [...section.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    const count = $(".count", section);
    count.textContent = answer.total === 0 ? "No dead letters." : `${number(answer.total)} dead letter${answer.total === 1 ? "" : "s"}${answer.total > answer.items.length ? ` (the oldest ${answer.items.length} shown)` : ""}.`;
    count.className = answer.total === 0 ? "count good" : "count bad";
    const wanted = new Set(answer.items.map((d) => String(d.id)));
    for (const row of [...body.querySelectorAll("tr")]) {
      if (!wanted.has(row.dataset.id || "")) row.remove();
    }
    let before = null;
    for (const d of [...answer.items].reverse()) {
      const id = String(d.id);
      let row = body.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
      const cells = [
        d.id,
        d.channel,
        el("code", {}, d.target),
        el("code", {}, d.request_id),
        number(d.attempts),
        when(d.since),
        d.last_error || "–",
      ];
      if (!row) {
        row = el("tr", { "data-id": id });
        cells.forEach((content, i) => row.append(el("td", { "data-label": labels[i], class: i === 4 ? "num" : null }, el("span", {}, content))));
        const retry = el("button", { type: "button", class: "retry", "data-id": id, "aria-label": `Retry dead letter ${id}`, onclick: () => retryDeadLetter(id, retry) }, "Retry");
        row.append(el("td", { "data-label": labels[7] }, retry));
      } else {
        cells.forEach((content, i) => row.children[i].firstChild.replaceChildren(content instanceof Node ? content : String(content)));
      }
      // Moving a row that is in place would take the focus from its button.
      if (row.parentNode !== body || row.nextSibling !== before) body.insertBefore(row, before);
      before = row;
    }
  }

  async function retryDeadLetter(id, button) {
    button.disabled = true;
    button.textContent = "Retrying…";
    try {
      const answer = await api("POST", `/v1/admin/dead-letters/${encodeURIComponent(id)}/retry`);
      if (answer.ok || answer.status === 404) {
        const row = button.closest("tr");
        const next = row && (row.nextElementSibling || row.previousElementSibling);
        if (row) row.remove();
        const focus = next && next.querySelector("button.retry");
        (focus || $("#dead-h")).focus({ preventScroll: true });
        say(answer.ok ? `Dead letter ${id} re-driven: it is in line again with fresh attempts.` : `Dead letter ${id} was no longer there (re-driven already?).`);
        refresh();
        return;
      }
      say(`Retrying dead letter ${id} failed: ${reason(answer)}`, true);
    } catch (e) {
      say(`Retrying dead letter ${id} failed: ${e.message}`, true);
    }
    button.disabled = false;
    button.textContent = "Retry";
  }

  // Charts: inline SVG.
  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * power) return m * power;
    return 10 * power;
  }

  const chartWidth = (box) => Math.max(300, Math.min(900, Math.round(box.clientWidth || 640)));

  const short = (v) => (v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(1) : v.toFixed(2));

  function lineChart(box, title, unit, minutes, lines) {
    // Drawn at the box's own width, so that its text keeps its size on a phone.
    const W = chartWidth(box), H = 210, L = 52, R = 14, T = 10, B = 26;
    const all = lines.flatMap((line) => minutes.map(line.value)).filter((v) => v !== null && v !== undefined);
    const max = niceMax(Math.max(0, ...all));
    const x = (i) => L + (i / Math.max(1, minutes.length - 1)) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const summary = lines.map((line) => {
      const values = minutes.map(line.value).filter((v) => v !== null && v !== undefined);
      if (values.length === 0) return `${line.name}: no data`;
      return `${line.name}: latest ${short(values[values.length - 1])} ${unit}, highest ${short(Math.max(...values))} ${unit}`;
    }).join("; ");
    const chart = sv("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} over the last hour. ${summary}.`, class: "chart" });
    chart.append(sv("title", {}, `${title} over the last hour`));
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      chart.append(sv("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      chart.append(sv("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, short(v)));
    }
    const ticks = [[0, "−60 min"], [30, "−30 min"], [minutes.length - 1, "now"]];
    for (const [i, label] of ticks) {
      chart.append(sv("text", { x: x(i), y: H - 6, "text-anchor": i === 0 ? "start" : i === minutes.length - 1 ? "end" : "middle" }, label));
    }
    lines.forEach((line, n) => {
      let d = "";
      let pen = false;
      minutes.forEach((m, i) => {
        const v = line.value(m);
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (d) chart.append(sv("path", { d, class: `line s${n + 1}` }));
      minutes.forEach((m, i) => {
        const v = line.value(m);
        const lonely = v !== null && v !== undefined && [minutes[i - 1], minutes[i + 1]].every((o) => !o || o === undefined || line.value(o) === null || line.value(o) === undefined);
        if (lonely) chart.append(sv("circle", { cx: x(i), cy: y(v), r: 3, class: `s${n + 1}` }));
      });
    });
    const legend = el("ul", { class: "legend" }, lines.map((line, n) => el("li", {}, el("span", { class: `swatch s${n + 1}`, "aria-hidden": "true" }), line.name)));
    box.replaceChildren(chart, legend, el("p", { class: "muted" }, summary));
  }

  function renderCharts(overview) {
    const series = overview.series;
    $("#series-scope").textContent = `This process's view (since ${new Date(series.since).toLocaleString()}): the commands its API appended and the pushes its scheduler delivered, per minute.`;
    lineChart($("#chart-commands"), "Commands per second", "/s", series.minutes, [
      { name: "commands/s", value: (m) => m.commands_per_second },
    ]);
    lineChart($("#chart-latency"), "Commit-to-push latency", "ms", series.minutes, [
      { name: "p50", value: (m) => m.push_p50_ms },
      { name: "p99", value: (m) => m.push_p99_ms },
    ]);
  }

  const OUTCOMES = [["approved", "Approved"], ["rejected", "Rejected"], ["returned", "Returned"], ["expired", "Expired"]];

  function renderAnalytics(answer) {
    const box = $("#analytics-body");
    if (!answer.ok || !answer.body || !Array.isArray(answer.body.groups)) {
      box.replaceChildren(el("p", { class: "muted", id: "analytics-unavailable" }, answer.status === 404 ? "Analytics unavailable: this service has no analytics endpoint yet." : `Analytics unavailable (${reason(answer)}).`));
      return;
    }
    const groups = answer.body.groups;
    if (groups.length === 0) {
      box.replaceChildren(el("p", { class: "muted" }, "No approvals to count yet."));
      return;
    }
    const W = chartWidth(box), L = Math.min(120, W / 4), R = 14, ROW = 30, T = 6;
    const H = T + groups.length * ROW + 24;
    const max = niceMax(Math.max(1, ...groups.map((g) => OUTCOMES.reduce((s, [k]) => s + (g[k] || 0), 0))));
    const scale = (v) => (v / max) * (W - L - R);
    const chart = sv("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart", "aria-label": `Outcomes by system: ${groups.map((g) => `${g.key}: ${OUTCOMES.map(([k, name]) => `${g[k] || 0} ${name.toLowerCase()}`).join(", ")}`).join("; ")}.` });
    chart.append(sv("title", {}, "Outcomes by system"));
    groups.forEach((g, row) => {
      const top = T + row * ROW;
      const key = String(g.key);
      const fits = Math.max(4, Math.floor((L - 10) / 7));
      chart.append(sv("text", { x: L - 8, y: top + 18, "text-anchor": "end" }, key.length > fits ? `${key.slice(0, fits - 1)}…` : key));
      let left = L;
      OUTCOMES.forEach(([k], n) => {
        const w = scale(g[k] || 0);
        if (w > 0) chart.append(sv("rect", { x: left, y: top + 4, width: w, height: ROW - 10, class: `s${n + 1}` }));
        left += w;
      });
    });
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      chart.append(sv("text", { x: L + scale(v), y: H - 6, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" }, short(v).replace(/\.0+$/, "")));
    }
    const legend = el("ul", { class: "legend" }, OUTCOMES.map(([, name], n) => el("li", {}, el("span", { class: `swatch s${n + 1}`, "aria-hidden": "true" }), name)));
    const table = el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["System", "Submitted", "Decided", "Approved", "Rejected", "Returned", "Expired", "Median time", "90th percentile", "Overdue"].map((h, i) => el("th", { scope: "col", class: i > 0 ? "num" : null }, h)))),
      el("tbody", {}, groups.map((g) => el("tr", {}, [
        ["System", g.key, false],
        ["Submitted", number(g.submitted), true],
        ["Decided", number(g.decided), true],
        ["Approved", number(g.approved), true],
        ["Rejected", number(g.rejected), true],
        ["Returned", number(g.returned), true],
        ["Expired", number(g.expired), true],
        ["Median time", duration(g.median_s), true],
        ["90th percentile", duration(g.p90_s), true],
        ["Overdue", number(g.overdue), true],
      ].map(([label, value, num]) => el("td", { "data-label": label, class: num ? "num" : null }, value)))))));
    box.replaceChildren(chart, legend, table);
  }

  // The refresh loop.
  let timer = null;
  let busy = false;
  let analyticsAt = 0;

  async function refresh() {
    if (busy || !sessionStorage.getItem(KEY)) return;
    busy = true;
    try {
      const [overview, dead] = await Promise.all([api("GET", "/v1/admin/overview"), api("GET", "/v1/admin/dead-letters")]);
      const refused = [overview, dead].find((a) => a.status === 401 || a.status === 403);
      if (refused) {
        signOut(refused.status === 401 ? "The service refused this token (401): it may have expired or be for another service. Enter another." : "This token lacks the role admin (403). Enter an administrator's token.");
        return;
      }
      if (overview.ok) {
        for (const render of [renderReaders, renderRelay, renderQueues, renderDeliveries, renderSla, renderCharts]) render(overview.body);
      }
      if (dead.ok) renderDeadLetters(dead.body);
      if (!overview.ok || !dead.ok) {
        say(`Some data could not be read: ${reason(overview.ok ? dead : overview)}`, true);
      } else if ($("#message").classList.contains("error")) {
        say("");
      }
      $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s.`;
      if (Date.now() - analyticsAt > ANALYTICS_MS) {
        analyticsAt = Date.now();
        renderAnalytics(await api("GET", "/v1/analytics/approvals?group_by=system"));
      }
    } catch (e) {
      say(`Cannot reach the service: ${e.message}`, true);
    } finally {
      busy = false;
    }
  }

  function signIn(token) {
    sessionStorage.setItem(KEY, token);
    $("#sign-in").hidden = true;
    $("#signed-in").hidden = false;
    $("#dashboard").hidden = false;
    analyticsAt = 0;
    refresh();
    clearInterval(timer);
    timer = setInterval(refresh, REFRESH_MS);
  }

  function signOut(why) {
    sessionStorage.removeItem(KEY);
    clearInterval(timer);
    timer = null;
    $("#sign-in").hidden = false;
    $("#signed-in").hidden = true;
    $("#dashboard").hidden = true;
    $("#updated").textContent = "";
    say(why || "", Boolean(why));
    $("#token").value = "";
    $("#token").focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#sign-in").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("#token").value.trim();
      if (!token) {
        say("Enter a token.", true);
        return;
      }
      $("#token").value = "";
      say("");
      signIn(token);
    });
    $("#sign-out").addEventListener("click", () => signOut(""));
    const kept = sessionStorage.getItem(KEY);
    if (kept) signIn(kept);
  });
})();
