// The interactive timeline of `blackbox html`. `D` holds the file's data:
// D.meta, and rows D.l (lanes), D.p (polls), D.s (spawns), D.k (parked
// intervals), D.e (entered request intervals), D.t (task -> request), D.o
// (request opens). Times are nanoseconds since the start of the file.
"use strict";
(function () {
  const M = D.meta;
  const SPAN = Math.max(M.span_ns, 1);
  const ROW = 22, REQ_ROW = 24, SECTION = 24, AXIS = 26, MAX_TASK_ROWS = 300;
  const COLOR = { poll: "#4c78a8", own: "#2f9e6e", long: "#e0453a", request: "#f0a030", park: "#eef1f4" };
  const str = (i) => (i >= 0 && i < M.strings.length ? M.strings[i] : null);

  // --- Formatting ---
  function dur(ns) {
    if (ns < 1e3) return ns.toFixed(0) + " ns";
    if (ns < 1e6) return (ns / 1e3).toFixed(1) + " \u00b5s";
    if (ns < 1e9) return (ns / 1e6).toFixed(1) + " ms";
    return (ns / 1e9).toFixed(3) + " s";
  }
  // Offsets from the start of the file (the page may show a range of it).
  const OFFSET = M.offset_ns || 0;
  const at = (ns) => {
    const v = ns + OFFSET;
    return (v < 0 ? "\u2212" : "+") + (Math.abs(v) / 1e9).toFixed(Math.abs(v) < 1e7 ? 6 : 3) + " s";
  };
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
    }
    for (const k of kids) e.append(k);
    return e;
  }

  // --- Model ---
  const lanes = new Map();
  for (const [idx, thread, lost] of D.l) {
    if (!lanes.has(idx)) lanes.set(idx, { idx, thread, lost, polls: [], parks: [], entered: [] });
  }
  const lane = (i) => {
    if (!lanes.has(i)) lanes.set(i, { idx: i, thread: "?", lost: 0, polls: [], parks: [], entered: [] });
    return lanes.get(i);
  };
  const tasks = new Map();
  const task = (id) => {
    if (!tasks.has(id)) tasks.set(id, { id, loc: null, polls: [], reqs: new Set(), busy: 0, longest: 0, spawned: null });
    return tasks.get(id);
  };
  for (const [l, t, start, d, delay, loc, complete] of D.p) {
    const p = { lane: l, task: t, start, end: start + d, d, delay, complete: complete === 1 };
    lane(l).polls.push(p);
    const k = task(t);
    k.polls.push(p);
    k.busy += d;
    k.longest = Math.max(k.longest, d);
    if (loc >= 0) k.loc = str(loc);
  }
  for (const [l, t, ts, loc] of D.s) {
    const k = task(t);
    k.spawned = { lane: l, ts };
    if (loc >= 0 && !k.loc) k.loc = str(loc);
  }
  for (const [l, a, b] of D.k) lane(l).parks.push({ start: a, end: b < 0 ? SPAN : b });
  for (const [l, r, a, b] of D.e) lane(l).entered.push({ req: r, start: a, end: b });
  for (const [t, r] of D.t) if (tasks.has(t)) tasks.get(t).reqs.add(r);
  const names = new Map();
  for (const [r, n] of D.o) if (n >= 0) names.set(r, str(n));
  const byStart = (a, b) => a.start - b.start;
  for (const l of lanes.values()) { l.polls.sort(byStart); l.parks.sort(byStart); }
  for (const t of tasks.values()) t.polls.sort(byStart);
  const slowIds = new Set(M.requests.map((r) => r.id));
  const longNs = M.long_poll_ns;
  const isOwn = (t) => { for (const r of t.reqs) if (slowIds.has(r)) return true; return false; };
  // `dir/file.rs:41:5` -> `file.rs:41`; the full location is in the tooltip.
  const taskName = (t) => {
    if (!t.loc) return "task " + t.id;
    const parts = t.loc.split(":");
    const fileLine = parts.length >= 3 ? parts.slice(0, -1).join(":") : t.loc;
    return fileLine.split("/").pop();
  };

  // --- Rows ---
  const rows = [];
  let y = 0;
  const add = (row, h) => { row.y = y; row.h = h; rows.push(row); y += h; };
  for (const r of M.requests) add({ kind: "request", req: r }, REQ_ROW);
  const laneList = [...lanes.values()].filter((l) => l.polls.length || l.parks.length || l.entered.length)
    .sort((a, b) => a.idx - b.idx);
  add({ kind: "section", text: "threads" }, SECTION);
  for (const l of laneList) add({ kind: "lane", lane: l }, ROW);
  const taskList = [...tasks.values()].filter((t) => t.polls.length)
    .sort((a, b) => (isOwn(b) - isOwn(a)) || ((b.longest >= longNs) - (a.longest >= longNs)) || (b.busy - a.busy) || (a.id - b.id));
  const shownTasks = taskList.slice(0, MAX_TASK_ROWS);
  add({ kind: "section", text: "tasks" + (taskList.length > shownTasks.length ? " (busiest " + shownTasks.length + " of " + taskList.length + ")" : "") }, SECTION);
  for (const t of shownTasks) add({ kind: "task", task: t }, ROW);
  const HEIGHT = y + 4;

  // --- Header facts ---
  const polls = D.p.length;
  const lost = [...lanes.values()].reduce((s, l) => s + l.lost, 0);
  const longCount = D.p.reduce((n, p) => n + (p[3] >= longNs ? 1 : 0), 0);
  const facts = document.getElementById("facts");
  const fact = (k, v, cls) => facts.append(el("span", { class: cls || "" }, k + " ", el("b", {}, String(v))));
  fact(M.kind === "capture" ? "capture" : "dump", M.kind === "capture" ? "#" + M.sequence : "pid " + M.pid);
  fact("start", M.start);
  fact("span", dur(SPAN));
  fact("threads", laneList.length);
  fact("tasks", tasks.size);
  fact("polls", polls.toLocaleString("en"));
  fact("long polls (\u2265 " + dur(longNs) + ")", longCount, longCount ? "warn" : "");
  fact("slow requests (\u2265 " + dur(M.threshold_ns) + ")", M.requests.length, M.requests.length ? "warn" : "");
  fact("events lost", lost, lost ? "warn" : "");
  // The headline: why the slowest request with a verdict was slow.
  const verdictOf = (r) => r.verdict ? r.verdict.cause + " (" + r.verdict.confidence + "): " +
    r.verdict.shares.map((s) => s.name + " " + dur(s.ns) + " " + Math.round(s.fraction * 100) + "%").join(", ") : "";
  const judged = M.requests.filter((r) => r.verdict).sort((a, b) => (b.end - b.start) - (a.end - a.start));
  if (judged.length) {
    const head = document.querySelector("header");
    head.append(el("p", { id: "verdict", class: "verdict", title: verdictOf(judged[0]) },
      el("b", {}, judged[0].verdict.cause), " " + judged[0].verdict.sentence));
  }

  // --- DOM skeleton ---
  const controls = document.getElementById("controls");
  const btn = (text, f, title) => { const b = el("button", { type: "button", title: title || "" }, text); b.addEventListener("click", f); controls.append(b); return b; };
  btn("Fit", () => setView(0, SPAN), "Show the whole file (0)");
  if (M.requests.length) btn("Zoom to request", () => zoomTo(M.requests[0].start, M.requests[0].end, 0.25), "Show the first slow request (r)");
  btn("+", () => zoom(0.5, 0.5), "Zoom in (+)");
  btn("\u2212", () => zoom(2, 0.5), "Zoom out (-)");
  const legend = el("span", { class: "legend" });
  for (const [c, t] of [[COLOR.poll, "poll"], [COLOR.own, "request's own task"], [COLOR.long, "long poll"], [COLOR.request, "slow request"], ["#dde2e8", "parked"]]) {
    legend.append(el("span", {}, el("i", { style: "" }), t));
    legend.lastChild.firstChild.style.background = c;
  }
  controls.append(legend);
  controls.append(el("span", { class: "hint" }, "wheel: zoom \u00b7 drag: pan \u00b7 double-click: fit"));

  const root = document.getElementById("timeline");
  const axis = el("canvas", { id: "axis" });
  const scroll = el("div", { id: "scroll" });
  const rowsDiv = el("div", { id: "rows" });
  const gutter = el("div", { id: "gutter" });
  const canvas = el("canvas", { id: "canvas" });
  rowsDiv.append(gutter, canvas);
  scroll.append(rowsDiv);
  root.append(axis, scroll);
  rowsDiv.style.height = HEIGHT + "px";

  for (const row of rows) {
    let label;
    if (row.kind === "request") {
      const r = row.req;
      label = el("div", { class: "label request slow" + (r.error ? " error" : ""), "data-trace": r.trace, "data-request": r.id },
        el("span", { class: "name" }, r.name), el("span", { class: "sub" }, dur(r.end - r.start) + " \u00b7 " + r.trace.slice(0, 8)));
    } else if (row.kind === "section") {
      label = el("div", { class: "label section" }, row.text);
    } else if (row.kind === "lane") {
      const l = row.lane;
      const worker = /worker/.test(l.thread);
      label = el("div", { class: "label lane" + (worker ? " worker" : ""), "data-lane": l.idx },
        el("span", { class: "name" }, (worker ? "worker" : l.thread) + " " + l.idx),
        el("span", { class: "sub" }, l.polls.length + " polls" + (l.lost ? " \u00b7 " + l.lost + " lost" : "")));
    } else {
      const t = row.task;
      const long = t.longest >= longNs;
      label = el("div", { class: "label task" + (isOwn(t) ? " own" : "") + (long ? " long" : ""), "data-task": t.id, title: t.loc || "" },
        el("span", { class: "name" }, taskName(t)), el("span", { class: "sub" }, "#" + t.id));
    }
    label.style.top = row.y + "px";
    label.style.height = row.h + "px";
    gutter.append(label);
  }

  // --- Details: slow requests and long polls ---
  const details = document.getElementById("details");
  const reqBox = el("section", { id: "requests" }, el("h2", {}, "Slow requests"));
  if (!M.requests.length) reqBox.append(el("p", { class: "none" }, "No slow request in this file."));
  else {
    const tb = el("table", {}, el("tr", {}, el("th", {}, "request"), el("th", {}, "duration"), el("th", {}, "at"), el("th", {}, "trace id"), el("th", {}, "verdict")));
    for (const r of M.requests) {
      const tr = el("tr", { class: "clickable slow-request", "data-trace": r.trace },
        el("td", {}, r.name), el("td", { class: "num" }, dur(r.end - r.start)), el("td", { class: "num" }, at(r.start)), el("td", {}, el("code", {}, r.trace)),
        el("td", { class: "verdict", title: verdictOf(r) }, r.verdict ? r.verdict.sentence : ""));
      tr.addEventListener("click", () => zoomTo(r.start, r.end, 0.25));
      tb.append(tr);
    }
    reqBox.append(tb);
  }
  const longBox = el("section", { id: "long-polls" }, el("h2", {}, "Long polls (\u2265 " + dur(longNs) + ")"));
  const longPolls = [];
  for (const l of lanes.values()) for (const p of l.polls) if (p.d >= longNs) longPolls.push(p);
  longPolls.sort((a, b) => b.d - a.d);
  if (!longPolls.length) longBox.append(el("p", { class: "none" }, "No poll reached the long-poll limit."));
  else {
    const tb = el("table", {}, el("tr", {}, el("th", {}, "task"), el("th", {}, "spawned at"), el("th", {}, "duration"), el("th", {}, "at"), el("th", {}, "thread")));
    for (const p of longPolls.slice(0, 50)) {
      const t = tasks.get(p.task);
      const tr = el("tr", { class: "clickable long-poll", "data-task": p.task },
        el("td", {}, "#" + p.task), el("td", {}, el("code", {}, t.loc || "unknown")), el("td", { class: "num" }, dur(p.d)),
        el("td", { class: "num" }, at(p.start)), el("td", {}, "lane " + p.lane));
      tr.addEventListener("click", () => zoomTo(p.start, p.end, 0.5));
      tb.append(tr);
    }
    longBox.append(tb);
  }
  details.append(reqBox, longBox);

  // --- View ---
  let t0 = 0, t1 = SPAN, width = 800;
  const dpr = window.devicePixelRatio || 1;
  function setView(a, b) {
    const minSpan = 1000; // 1 us
    if (b - a < minSpan) { const c = (a + b) / 2; a = c - minSpan / 2; b = c + minSpan / 2; }
    const pad = (b - a) * 0.02;
    t0 = Math.max(-pad, a); t1 = Math.min(SPAN + pad, b);
    if (t1 <= t0) { t0 = 0; t1 = SPAN; }
    draw();
  }
  function zoomTo(a, b, margin) { const m = (b - a) * margin; setView(a - m, b + m); }
  function zoom(factor, frac) {
    const c = t0 + (t1 - t0) * frac;
    setView(c - (c - t0) * factor, c + (t1 - c) * factor);
  }
  const xOf = (t) => ((t - t0) / (t1 - t0)) * width;
  const tOf = (x) => t0 + (x / width) * (t1 - t0);

  function size(c, w, h) {
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    c.style.width = w + "px"; c.style.height = h + "px";
    const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0); return g;
  }

  // First index whose end is >= t in a list sorted by start with no overlaps.
  function firstEnding(list, t) {
    let lo = 0, hi = list.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (list[mid].end < t) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function ticks() {
    const span = t1 - t0, target = span / Math.max(4, width / 110);
    const pow = Math.pow(10, Math.floor(Math.log10(target)));
    const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= target) || 10 * pow;
    const out = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
    return { out, step };
  }

  function drawPolls(g, list, yy, h, colorOf) {
    let lastX = -1;
    for (let i = firstEnding(list, t0); i < list.length; i++) {
      const p = list[i];
      if (p.start > t1) break;
      const x = xOf(p.start), w = Math.max(1, xOf(p.end) - x);
      if (w < 1.5 && Math.floor(x) === lastX) continue; // sub-pixel polls: one mark per pixel
      lastX = Math.floor(x);
      g.fillStyle = colorOf(p);
      g.globalAlpha = p.complete ? 1 : 0.55;
      g.fillRect(x, yy, w, h);
      if (p.d >= longNs && w > 3) { g.globalAlpha = 1; g.strokeStyle = "#a8231a"; g.lineWidth = 1; g.strokeRect(x + 0.5, yy + 0.5, w - 1, h - 1); }
    }
    g.globalAlpha = 1;
  }

  function draw() {
    width = Math.max(200, root.clientWidth - parseInt(getComputedStyle(document.documentElement).getPropertyValue("--gutter")) - 2);
    // Axis.
    const ga = size(axis, width, AXIS);
    ga.clearRect(0, 0, width, AXIS);
    ga.font = "11px system-ui, sans-serif";
    ga.fillStyle = "#6a7480"; ga.strokeStyle = "#c9d0d8";
    const tk = ticks();
    for (const t of tk.out) {
      const x = Math.round(xOf(t)) + 0.5;
      ga.beginPath(); ga.moveTo(x, AXIS - 7); ga.lineTo(x, AXIS); ga.stroke();
      ga.fillText(at(t).replace(/0+ s$/, " s").replace(/\. s$/, " s"), x + 3, AXIS - 10);
    }
    // Rows.
    const g = size(canvas, width, HEIGHT);
    g.clearRect(0, 0, width, HEIGHT);
    g.font = "11px system-ui, sans-serif";
    for (const t of tk.out) { const x = Math.round(xOf(t)) + 0.5; g.fillStyle = "#f1f3f6"; g.fillRect(x, 0, 1, HEIGHT); }
    for (const row of rows) {
      if (row.kind !== "section") { g.fillStyle = "#eef0f3"; g.fillRect(0, row.y + row.h - 1, width, 1); }
    }
    // The slow requests: a band across every lane and a bar in their own row.
    for (const row of rows) {
      if (row.kind !== "request") continue;
      const r = row.req, x = xOf(r.start), w = Math.max(1, xOf(r.end) - x);
      g.fillStyle = "rgba(240,160,48,0.10)"; g.fillRect(x, row.y + row.h, w, HEIGHT - row.y - row.h);
      g.fillStyle = "rgba(240,160,48,0.55)"; g.fillRect(x, row.y + row.h, 1, HEIGHT); g.fillRect(x + w - 1, row.y + row.h, 1, HEIGHT);
      g.fillStyle = COLOR.request; g.fillRect(x, row.y + 4, w, row.h - 8);
      const label = r.name + "  " + dur(r.end - r.start);
      if (w > g.measureText(label).width + 10) { g.fillStyle = "#3b2500"; g.fillText(label, Math.max(x, 0) + 5, row.y + row.h / 2 + 4); }
    }
    for (const row of rows) {
      if (row.kind === "lane") {
        const l = row.lane;
        g.fillStyle = COLOR.park;
        for (const k of l.parks) { if (k.end < t0 || k.start > t1) continue; const x = xOf(k.start); g.fillRect(x, row.y + 9, Math.max(1, xOf(k.end) - x), 4); }
        drawPolls(g, l.polls, row.y + 3, row.h - 7, (p) => {
          const t = tasks.get(p.task);
          return p.d >= longNs ? COLOR.long : isOwn(t) ? COLOR.own : COLOR.poll;
        });
        // Where a slow request's span was entered on this thread.
        g.fillStyle = COLOR.request;
        for (const e of l.entered) { if (!slowIds.has(e.req) || e.end < t0 || e.start > t1) continue; const x = xOf(e.start); g.fillRect(x, row.y + row.h - 4, Math.max(1, xOf(e.end) - x), 2); }
      } else if (row.kind === "task") {
        const t = row.task, own = isOwn(t);
        // Scheduling delay: a thin line before each poll that waited.
        g.fillStyle = "#c2cad3";
        for (let i = firstEnding(t.polls, t0); i < t.polls.length; i++) {
          const p = t.polls[i]; if (p.start > t1) break;
          if (p.delay > 0) { const x = xOf(p.start - p.delay); g.fillRect(x, row.y + row.h / 2 - 1, Math.max(1, xOf(p.start) - x), 2); }
        }
        drawPolls(g, t.polls, row.y + 4, row.h - 9, (p) => (p.d >= longNs ? COLOR.long : own ? COLOR.own : COLOR.poll));
        if (t.spawned && t.spawned.ts >= t0 && t.spawned.ts <= t1) {
          const x = xOf(t.spawned.ts); g.fillStyle = "#1d232b"; g.beginPath(); g.moveTo(x, row.y + 3); g.lineTo(x + 4, row.y + 8); g.lineTo(x - 4, row.y + 8); g.fill();
        }
      } else if (row.kind === "section") {
        g.fillStyle = "#f7f9fb"; g.fillRect(0, row.y, width, row.h);
      }
    }
  }

  // --- Interaction ---
  const tip = document.getElementById("tip");
  function hit(ev) {
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left, yy = ev.clientY - rect.top;
    const row = rows.find((r) => yy >= r.y && yy < r.y + r.h);
    if (!row) return null;
    const t = tOf(x), slack = (3 / width) * (t1 - t0);
    if (row.kind === "request") {
      const r = row.req; return t >= r.start - slack && t <= r.end + slack ? { request: r } : null;
    }
    const list = row.kind === "lane" ? row.lane.polls : row.kind === "task" ? row.task.polls : null;
    if (!list) return null;
    let best = null;
    for (let i = firstEnding(list, t - slack); i < list.length && list[i].start <= t + slack; i++) {
      const p = list[i];
      if (!best || Math.abs((p.start + p.end) / 2 - t) < Math.abs((best.start + best.end) / 2 - t)) best = p;
    }
    return best ? { poll: best } : null;
  }
  function show(ev, h) {
    if (!h) { tip.hidden = true; return; }
    const line = (k, v, cls) => "<div><span class=k>" + k + "</span><span class='" + (cls || "") + "'>" + v + "</span></div>";
    const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
    let html;
    if (h.request) {
      const r = h.request;
      html = "<div class=t>" + esc(r.name) + "</div>" + line("duration", dur(r.end - r.start), "bad") + line("from", at(r.start)) +
        line("to", at(r.end)) + line("trace id", esc(r.trace)) + line("span id", esc(r.span));
    } else {
      const p = h.poll, t = tasks.get(p.task);
      const reqs = [...t.reqs].map((r) => names.get(r) || "request " + r);
      html = "<div class=t>task " + p.task + "</div>" + line("spawned at", esc(t.loc || "unknown")) +
        line("poll", dur(p.d) + (p.d >= longNs ? " \u2014 long poll" : "") + (p.complete ? "" : " (cut)"), p.d >= longNs ? "bad" : "") +
        line("scheduling delay", p.delay >= 0 ? dur(p.delay) : "not recorded") +
        line("started", at(p.start)) + line("thread", "lane " + p.lane + " (" + esc((lanes.get(p.lane) || {}).thread || "?") + ")") +
        (reqs.length ? line("worked for", esc(reqs.join(", "))) : "");
    }
    tip.innerHTML = html;
    tip.hidden = false;
    const pad = 14, w = tip.offsetWidth, hh = tip.offsetHeight;
    tip.style.left = Math.min(ev.clientX + pad, window.innerWidth - w - 4) + "px";
    tip.style.top = (ev.clientY + pad + hh > window.innerHeight ? ev.clientY - hh - pad : ev.clientY + pad) + "px";
  }
  let drag = null;
  for (const c of [canvas, axis]) {
    c.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, t0, t1 }; c.classList.add("dragging"); tip.hidden = true; });
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const rect = c.getBoundingClientRect();
      zoom(Math.pow(1.0015, ev.deltaY), (ev.clientX - rect.left) / width);
    }, { passive: false });
    c.addEventListener("dblclick", () => setView(0, SPAN));
  }
  window.addEventListener("mousemove", (ev) => {
    if (drag) {
      const dt = ((ev.clientX - drag.x) / width) * (drag.t1 - drag.t0);
      setView(drag.t0 - dt, drag.t1 - dt);
      return;
    }
    show(ev, ev.target === canvas ? hit(ev) : null);
  });
  window.addEventListener("mouseup", () => { drag = null; canvas.classList.remove("dragging"); axis.classList.remove("dragging"); });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  window.addEventListener("keydown", (ev) => {
    if (ev.key === "+" || ev.key === "=") zoom(0.5, 0.5);
    else if (ev.key === "-") zoom(2, 0.5);
    else if (ev.key === "0") setView(0, SPAN);
    else if (ev.key === "r" && M.requests.length) zoomTo(M.requests[0].start, M.requests[0].end, 0.25);
    else if (ev.key === "ArrowLeft") setView(t0 - (t1 - t0) * 0.2, t1 - (t1 - t0) * 0.2);
    else if (ev.key === "ArrowRight") setView(t0 + (t1 - t0) * 0.2, t1 + (t1 - t0) * 0.2);
  });
  window.addEventListener("resize", draw);
  draw();
  document.body.setAttribute("data-rendered", "true");
  // For tests and the curious: how many resources the page loaded (none).
  window.addEventListener("load", () => {
    document.body.setAttribute("data-resources", String(performance.getEntriesByType("resource").length));
  });
})();
