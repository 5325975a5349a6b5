// tagstore's page: search and listen, tags, teach a tag by ear, a map of the collection.
// Plain browser JavaScript, no build step: every action is one call to the JSON routes of tagstore.server.web.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  tags: [],
  results: [],
  teach: { name: "", exists: false, queue: [], pendingNo: [], current: null, busy: false, curve: [] },
  map: null,
  tagDetail: null,
};
window.tagstore = state; // for the browser tests and the curious

// --- helpers ------------------------------------------------------------------------------------

async function call(path, options = {}) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error(body?.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

const send = (method, path, data) =>
  call(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(data ?? {}) });

function say(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

const fail = (error) => say(error.message, true);
const tagPath = (name) => `/api/tags/${encodeURIComponent(name)}`;
const audioSrc = (id) => `/api/tracks/${id}/audio`;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function minutes(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

const fileName = (path) => (path || "").split(/[\\/]/).pop();
const trackTitle = (t) => t.title || fileName(t.path) || `track ${t.id}`;
const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function trackRow(hit, { rank = hit.rank, actions = true } = {}) {
  const stored = hit.id !== null && hit.id !== undefined;
  if (!stored) actions = false; // an outside file given as an example: not served
  const player = stored ? el("audio", { controls: true, preload: "none", src: audioSrc(hit.id) }) : "outside file";
  const row = el("tr", { dataset: { id: hit.id } },
    el("td", { className: "num" }, String(rank ?? "")),
    el("td", {}, hit.artist || ""),
    el("td", { title: hit.path || "" }, trackTitle(hit)),
    el("td", { className: "num" }, minutes(hit.duration_s)),
    el("td", { className: "num" }, hit.score === null || hit.score === undefined ? "" : fmt(hit.score)),
    el("td", {}, player),
    el("td", { className: "actions" }, actions ? el("span", {},
      el("button", { type: "button", className: "like", title: "search for tracks like this one",
        onclick: () => searchSimilar(hit.id) }, "more like this"),
      el("button", { type: "button", className: "teach-one", title: "start or extend a tag from this track",
        onclick: () => teachFrom([hit]) }, "teach…")) : null),
  );
  return row;
}

// --- views --------------------------------------------------------------------------------------

function show() {
  const [view, ...rest] = (location.hash.slice(1) || "search").split("/");
  const arg = decodeURIComponent(rest.join("/"));
  const name = view === "tag" ? "tags" : view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === name);
  if (name === "tags") loadTags().then(() => (view === "tag" && arg ? openTag(arg) : ($("#tag-detail").hidden = true)));
  if (name === "teach" && arg && arg !== state.teach.name) openTeach(arg);
  if (name === "map") loadMap();
}

async function loadTags() {
  try {
    state.tags = (await call("/api/web/tags")).tags;
  } catch (error) {
    return fail(error);
  }
  const names = state.tags.map((t) => t.name);
  $("#tag-names").replaceChildren(...names.map((n) => el("option", { value: n })));
  for (const select of document.querySelectorAll(".tag-choice, #search-tag")) {
    const keep = select.value;
    const blank = select.id === "search-tag" ? [] : [el("option", { value: "" }, "—")];
    select.replaceChildren(...blank, ...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(keep)) select.value = keep;
  }
  $("#tag-list tbody").replaceChildren(...state.tags.map((t) => el("tr", {},
    el("td", {}, el("a", { href: `#tag/${encodeURIComponent(t.name)}` }, t.name)),
    el("td", {}, t.kind),
    el("td", {}, t.method || ""),
    el("td", { className: "num" }, t.kind === "learned" ? `${t.n_pos} / ${t.n_neg}` : ""),
    el("td", { className: "num" }, `${t.predicted} of ${t.scored}`),
    el("td", { className: "num" }, fmt(t.threshold)),
    el("td", { className: "num" }, fmt(t.cv_ap)),
  )));
}

// --- search -------------------------------------------------------------------------------------

function searchMode() {
  const mode = $("#search-mode").value;
  for (const input of document.querySelectorAll("#search-form [data-mode]")) input.hidden = input.dataset.mode !== mode;
}

function filters() {
  const params = new URLSearchParams();
  if ($("#search-with").value) params.append("with", $("#search-with").value);
  if ($("#search-without").value) params.append("without", $("#search-without").value);
  return params;
}

async function runSearch(event) {
  event?.preventDefault();
  const mode = $("#search-mode").value;
  const params = filters();
  params.set("k", "50");
  say("searching…");
  const started = performance.now();
  try {
    let answer;
    if (mode === "upload") {
      const file = $("#search-file").files[0];
      if (!file) throw new Error("choose an audio file to search with");
      params.set("name", file.name);
      answer = await call(`/api/search/upload?${params}`, { method: "POST", body: file });
    } else {
      params.set("mode", mode);
      if (mode === "text") params.set("q", $("#search-q").value);
      if (mode === "tag") params.set("tag", $("#search-tag").value);
      if (mode === "similar") params.set("track", $("#search-track").value);
      answer = await call(`/api/search?${params}`);
    }
    showResults(answer.results, mode, performance.now() - started);
  } catch (error) {
    fail(error);
  }
}

function showResults(results, mode, ms) {
  state.results = results;
  $("#results tbody").replaceChildren(...results.map((hit) => trackRow(hit)));
  $("#search-summary").textContent = `${results.length} result${results.length === 1 ? "" : "s"} (${mode})`;
  $("#teach-from-results").disabled = results.length === 0;
  say(`search answered in ${Math.round(ms)} ms`);
}

function searchSimilar(id) {
  location.hash = "#search";
  $("#search-mode").value = "similar";
  $("#search-track").value = id;
  searchMode();
  runSearch();
}

// --- tags ---------------------------------------------------------------------------------------

async function openTag(name) {
  let detail;
  try {
    detail = await call(`/api/web/tags/${encodeURIComponent(name)}`);
  } catch (error) {
    return fail(error);
  }
  state.tagDetail = detail;
  const t = detail.tag;
  $("#tag-detail").hidden = false;
  $("#tag-title").textContent = t.name;
  $("#tag-facts").textContent = `${t.kind} tag · method ${t.method || "–"} · ${t.n_pos} positive / ${t.n_neg} negative examples · `
    + `predicted ${t.predicted} of ${t.scored} · CV AP ${fmt(t.cv_ap)}`;
  const edges = detail.histogram.edges;
  const slider = $("#tag-threshold");
  if (edges.length) {
    // a little beyond the scores at both ends, so the ends mean "every track" and "none" despite rounding
    const pad = (edges[edges.length - 1] - edges[0]) * 0.002 || 0.001;
    const lo = Math.min(edges[0], t.threshold ?? edges[0]) - pad;
    const hi = Math.max(edges[edges.length - 1], t.threshold ?? lo) + pad;
    slider.min = lo;
    slider.max = hi;
    slider.step = (hi - lo) / 1000 || 0.001;
  }
  slider.value = t.threshold ?? 0;
  slider.disabled = !edges.length;
  thresholdMoved();
  $("#tag-teach").hidden = t.kind !== "learned";
  $("#tag-examples tbody").replaceChildren(...detail.examples.map((e, i) =>
    trackRow({ ...e, score: null, rank: e.label === "positive" ? "+" : "−" }, { rank: e.label === "positive" ? "+" : "−" })));
  $("#tag-top tbody").replaceChildren(...detail.top.map((s) => trackRow(s)));
}

let countTimer = null;
function thresholdMoved() {
  const value = Number($("#tag-threshold").value);
  $("#tag-threshold-value").textContent = value.toFixed(3);
  drawHistogram(value);
  clearTimeout(countTimer);
  countTimer = setTimeout(async () => {
    const name = state.tagDetail?.tag.name;
    if (!name) return;
    try {
      const { count } = await call(`/api/web/tags/${encodeURIComponent(name)}/count?threshold=${value}`);
      $("#tag-live-count").textContent = `${count} track${count === 1 ? "" : "s"} at or above`;
    } catch (error) {
      fail(error);
    }
  }, 40);
}

function drawHistogram(threshold) {
  const canvas = $("#tag-histogram");
  const ctx = canvas.getContext("2d");
  const { edges, counts } = state.tagDetail?.histogram ?? { edges: [], counts: [] };
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!counts.length) return;
  const lo = Number($("#tag-threshold").min), hi = Number($("#tag-threshold").max);
  const x = (v) => ((v - lo) / (hi - lo || 1)) * canvas.width;
  const top = Math.max(...counts.map((c) => Math.log1p(c)));
  counts.forEach((c, i) => {
    const h = (Math.log1p(c) / (top || 1)) * (canvas.height - 4);
    ctx.fillStyle = edges[i + 1] > threshold ? "#3b82f6" : "#cbd5e1";
    ctx.fillRect(x(edges[i]), canvas.height - h, Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1), h);
  });
  ctx.fillStyle = "#dc2626";
  ctx.fillRect(x(threshold) - 1, 0, 2, canvas.height);
}

async function saveThreshold() {
  const name = state.tagDetail?.tag.name;
  try {
    const { tag } = await send("PUT", `${tagPath(name)}/threshold`, { threshold: Number($("#tag-threshold").value) });
    say(`${tag.name}: threshold ${fmt(tag.threshold)}, ${tag.predicted} predicted`);
    await loadTags();
    await openTag(name);
  } catch (error) {
    fail(error);
  }
}

// --- teach --------------------------------------------------------------------------------------

function teachFrom(hits) {
  const teach = state.teach;
  teach.queue = hits.map((h) => ({ ...h }));
  teach.pendingNo = [];
  location.hash = "#teach";
  nextProposal();
  if (teach.name) openTeach(teach.name, true);
  else $("#teach-name").focus();
}

async function openTeach(name, keepQueue = false) {
  const teach = state.teach;
  teach.name = name.trim();
  $("#teach-name").value = teach.name;
  if (!teach.name) return;
  try {
    const found = await call(`${tagPath(teach.name)}/suggest?n=10`);
    if (keepQueue && teach.current) {
      Object.assign(teach, { exists: true, curve: found.curve, tag: found.tag });
      renderTeach();
    } else {
      applyTaught(found);
    }
    $("#teach-hint").textContent = keepQueue && teach.current ? "answering tracks from your search" : "";
  } catch (error) {
    if (error.status !== 404) return fail(error);
    teach.exists = false;
    teach.curve = [];
    $("#teach-hint").textContent = teach.queue.length
      ? `new tag: say yes to a track to start “${teach.name}”`
      : "new tag: search for tracks first, then “Teach a tag from these results” (or use “teach…” on a row)";
    renderTeach();
  }
}

function applyTaught(answer) {
  const teach = state.teach;
  teach.exists = answer.tag !== null;
  if (teach.exists) $("#teach-hint").textContent = "";
  teach.curve = answer.curve;
  teach.tag = answer.tag;
  teach.queue = answer.proposals;
  teach.lastRefit = answer.refit_s;
  nextProposal();
}

function nextProposal() {
  const teach = state.teach;
  teach.current = teach.queue.shift() ?? null;
  renderTeach();
  const player = $("#teach-audio");
  if (teach.current) {
    player.src = audioSrc(teach.current.id);
    player.play().catch(() => {}); // autoplay may wait for a first key press
  } else {
    player.removeAttribute("src");
  }
}

function renderTeach() {
  const teach = state.teach;
  const current = teach.current;
  $("#teach-track").textContent = current
    ? `${current.artist ? current.artist + " – " : ""}${trackTitle(current)} (#${current.id}, ${minutes(current.duration_s)})`
    : (teach.exists ? "No more proposals for now." : "Nothing to label yet: search, then “Teach a tag from these results”, or open a tag.");
  $("#teach-score").textContent = current && current.score !== undefined && current.score !== null
    ? `score ${fmt(current.score)} · threshold ${fmt(current.threshold)}` : "";
  const ready = Boolean(current && teach.name) && !teach.busy;
  $("#answer-yes").disabled = !ready;
  $("#answer-no").disabled = !ready;
  $("#answer-skip").disabled = !ready;
  $("#answer-undo").disabled = !teach.exists || teach.busy;
  const t = teach.tag;
  $("#teach-stats").textContent = t && teach.exists
    ? `${t.name}: ${t.n_pos} yes / ${t.n_neg} no · CV AP ${fmt(t.cv_ap)} · predicted ${t.predicted} of ${t.scored}`
      + (teach.lastRefit ? ` · refit ${Math.round(teach.lastRefit * 1000)} ms` : "")
    : (teach.pendingNo.length ? `${teach.pendingNo.length} “no” kept until the first yes` : "");
  const queue = $("#teach-queue");
  queue.dataset.ids = teach.queue.map((p) => p.id).join(",");
  queue.replaceChildren(...teach.queue.map((p) => el("li", { dataset: { id: p.id } },
    `${trackTitle(p)}${p.score !== undefined && p.score !== null ? ` · ${fmt(p.score)}` : ""}`)));
  drawCurve();
}

async function answer(reply) {
  const teach = state.teach;
  const current = teach.current;
  if (!current || teach.busy) return;
  teach.name = $("#teach-name").value.trim() || teach.name;
  if (!teach.name) return say("name the tag first", true);
  if (!teach.exists && reply !== "yes") { // the tag starts with its first yes; keep the no's until then
    if (reply === "no") teach.pendingNo.push(current.id);
    return nextProposal();
  }
  teach.busy = true;
  renderTeach();
  const started = performance.now();
  try {
    let result = await send("POST", `${tagPath(teach.name)}/label`, { track: current.id, answer: reply });
    for (const id of teach.pendingNo.splice(0)) {
      result = await send("POST", `${tagPath(teach.name)}/label`, { track: id, answer: "no" });
    }
    teach.busy = false;
    applyTaught(result);
    say(`${reply} for #${current.id}: answered in ${Math.round(performance.now() - started)} ms`);
    if (!state.tags.some((t) => t.name === teach.name)) loadTags();
  } catch (error) {
    teach.busy = false;
    renderTeach();
    fail(error);
  }
}

async function undo() {
  const teach = state.teach;
  if (!teach.exists || teach.busy) return;
  teach.busy = true;
  try {
    const result = await send("POST", `${tagPath(teach.name)}/undo`);
    teach.busy = false;
    applyTaught(result);
    say(result.tag ? `undid answer ${result.answer.seq} (#${result.answer.track})` : `undid the first answer: “${teach.name}” is gone`);
    if (!result.tag) loadTags();
  } catch (error) {
    teach.busy = false;
    renderTeach();
    fail(error);
  }
}

function drawCurve() {
  const canvas = $("#teach-curve");
  const ctx = canvas.getContext("2d");
  const points = state.teach.curve.filter((p) => p.cv_ap !== null);
  const W = canvas.width, H = canvas.height, L = 34, B = 22;
  ctx.clearRect(0, 0, W, H);
  ctx.strokeStyle = "#94a3b8";
  ctx.fillStyle = "#475569";
  ctx.font = "11px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(L, 6);
  ctx.lineTo(L, H - B);
  ctx.lineTo(W - 6, H - B);
  ctx.stroke();
  ctx.fillText("1.0", 6, 12);
  ctx.fillText("0.0", 6, H - B);
  ctx.fillText("CV AP", L + 4, 14);
  const maxLabels = Math.max(2, ...state.teach.curve.map((p) => p.labels));
  const x = (n) => L + ((n - 1) / (maxLabels - 1)) * (W - L - 12);
  const y = (ap) => H - B - ap * (H - B - 8);
  ctx.fillText("1", x(1) - 3, H - 8);
  ctx.fillText(String(maxLabels), x(maxLabels) - 8, H - 8);
  ctx.fillText("labels", (L + W) / 2 - 16, H - 8);
  if (!points.length) return;
  ctx.strokeStyle = "#2563eb";
  ctx.fillStyle = "#2563eb";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p.labels), y(p.cv_ap)) : ctx.moveTo(x(p.labels), y(p.cv_ap))));
  ctx.stroke();
  for (const p of points) ctx.fillRect(x(p.labels) - 2, y(p.cv_ap) - 2, 4, 4);
  ctx.lineWidth = 1;
}

function keys(event) {
  if (location.hash.slice(1).split("/")[0] !== "teach") return;
  if (event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  const action = { y: () => answer("yes"), n: () => answer("no"), s: () => answer("skip"), u: undo }[event.key.toLowerCase()];
  if (action) {
    event.preventDefault();
    action();
  }
}

// --- map ----------------------------------------------------------------------------------------

const mapView = { zoom: 1, panX: 0, panY: 0, selected: -1, drag: null };

async function loadMap(force = false) {
  const method = $("#map-method").value || "pca";
  if (state.map && state.map.method === method && !force) return drawMap();
  say("projecting the collection…");
  const started = performance.now();
  try {
    const data = await call(`/api/map?method=${method}`);
    const n = data.ids.length;
    const x = Float32Array.from(data.x, (v) => v ?? 0), y = Float32Array.from(data.y, (v) => v ?? 0);
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (let i = 0; i < n; i++) {
      x0 = Math.min(x0, x[i]); x1 = Math.max(x1, x[i]); y0 = Math.min(y0, y[i]); y1 = Math.max(y1, y[i]);
    }
    state.map = { method: data.method, ids: Float64Array.from(data.ids), x, y, scores: null, order: null, lo: 0, hi: 1,
      count: n, midX: n ? (x0 + x1) / 2 : 0, midY: n ? (y0 + y1) / 2 : 0, half: n ? Math.max(x1 - x0, y1 - y0) / 2 || 1 : 1 };
    Object.assign(mapView, { zoom: 1, panX: 0, panY: 0, selected: -1 });
    const methods = $("#map-method");
    if (methods.options.length !== data.methods.length) {
      methods.replaceChildren(...data.methods.map((m) => el("option", { value: m }, m.toUpperCase())));
      methods.value = data.method;
    }
    say(`${n} tracks on the map (${Math.round(performance.now() - started)} ms)`);
    await colourMap();
  } catch (error) {
    fail(error);
  }
}

async function colourMap() {
  const map = state.map;
  if (!map) return;
  const tag = $("#map-tag").value;
  map.scores = null;
  map.order = null;
  if (tag) {
    try {
      const data = await call(`/api/map/scores?tag=${encodeURIComponent(tag)}&method=${map.method}`);
      const scores = Float32Array.from(data.scores, (v) => (v === null ? NaN : v));
      const finite = Array.from(scores).filter(Number.isFinite).sort((a, b) => a - b);
      map.lo = finite.length ? finite[Math.floor(0.02 * (finite.length - 1))] : 0;
      map.hi = finite.length ? finite[Math.floor(0.98 * (finite.length - 1))] : 1;
      map.scores = scores;
      const key = (i) => (Number.isFinite(scores[i]) ? scores[i] : -Infinity);
      map.order = Uint32Array.from(scores.keys()).sort((a, b) => key(a) - key(b));
      map.threshold = data.threshold;
      $("#map-legend").textContent = `${tag}: low ${fmt(map.lo)} → high ${fmt(map.hi)} (threshold ${fmt(data.threshold)})`;
    } catch (error) {
      fail(error);
    }
  } else {
    $("#map-legend").textContent = "";
  }
  drawMap();
}

function ramp(t) { // dark blue → teal → yellow (viridis-like), t in [0, 1]
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const f = Math.min(0.9999, Math.max(0, t)) * (stops.length - 1);
  const i = Math.floor(f), u = f - i;
  const a = stops[i], b = stops[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * u));
}

function frame(canvas) { // the points' bounding box fitted into the canvas, then the user's zoom and pan
  const map = state.map;
  const s = ((Math.min(canvas.width, canvas.height) / 2 - 12) / map.half) * mapView.zoom;
  return { s, cx: canvas.width / 2 + mapView.panX - map.midX * s, cy: canvas.height / 2 + mapView.panY + map.midY * s };
}

function toScreen(canvas, i) {
  const map = state.map;
  const { s, cx, cy } = frame(canvas);
  return [cx + map.x[i] * s, cy - map.y[i] * s];
}

function drawMap() {
  const map = state.map;
  const canvas = $("#map-canvas");
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(200, Math.floor(canvas.clientWidth * ratio));
  const height = Math.max(200, Math.floor(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
  const ctx = canvas.getContext("2d");
  const started = performance.now();
  const image = ctx.createImageData(width, height);
  const pixels = new Uint32Array(image.data.buffer);
  pixels.fill(0xfff7f3f1); // background (ABGR little-endian)
  if (!map) return ctx.putImageData(image, 0, 0);
  const n = map.count;
  const palette = new Uint32Array(256);
  for (let k = 0; k < 256; k++) {
    const [r, g, b] = ramp(k / 255);
    palette[k] = (255 << 24) | (b << 16) | (g << 8) | r;
  }
  const plain = (255 << 24) | (180 << 16) | (116 << 8) | 71; // rgb(71,116,180)
  const size = Math.round((n > 20000 ? 1 : n > 2000 ? 2 : n > 200 ? 4 : 7) * Math.max(1, ratio));
  const half = Math.floor(size / 2);
  const span = map.hi - map.lo || 1;
  const { s, cx, cy } = frame(canvas);
  let drawn = 0;
  for (let j = 0; j < n; j++) {
    const i = map.order ? map.order[j] : j;
    const px = Math.round(cx + map.x[i] * s) - half, py = Math.round(cy - map.y[i] * s) - half;
    if (px < 0 || py < 0 || px + size > width || py + size > height) continue;
    let colour = plain;
    if (map.scores) {
      const v = map.scores[i];
      colour = Number.isFinite(v) ? palette[Math.max(0, Math.min(255, Math.round(((v - map.lo) / span) * 255)))] : 0xffcccccc;
    }
    for (let dy = 0; dy < size; dy++) pixels.fill(colour, (py + dy) * width + px, (py + dy) * width + px + size);
    drawn++;
  }
  ctx.putImageData(image, 0, 0);
  if (mapView.selected >= 0) {
    const [sx, sy] = toScreen(canvas, mapView.selected);
    ctx.strokeStyle = "#dc2626";
    ctx.lineWidth = 2 * ratio;
    ctx.beginPath();
    ctx.arc(sx, sy, 7 * ratio, 0, 2 * Math.PI);
    ctx.stroke();
  }
  map.drawn = drawn;
  map.drawMs = performance.now() - started;
}

function nearestPoint(canvas, clientX, clientY) {
  const map = state.map;
  if (!map) return -1;
  const rect = canvas.getBoundingClientRect();
  const ratio = canvas.width / rect.width;
  const qx = (clientX - rect.left) * ratio, qy = (clientY - rect.top) * ratio;
  let best = -1, bestD = (10 * ratio) ** 2;
  for (let i = 0; i < map.count; i++) {
    const [px, py] = toScreen(canvas, i);
    const d = (px - qx) ** 2 + (py - qy) ** 2;
    if (d < bestD) [best, bestD] = [i, d];
  }
  return best;
}

async function playPoint(i) {
  const id = state.map.ids[i];
  mapView.selected = i;
  state.map.selected = id;
  drawMap();
  const player = $("#map-audio");
  player.src = audioSrc(id);
  player.play().catch(() => {});
  try {
    const t = await call(`/api/web/tracks/${id}`);
    const score = state.map.scores ? ` · score ${fmt(state.map.scores[i])}` : "";
    $("#map-track").textContent = `${t.artist ? t.artist + " – " : ""}${trackTitle(t)} (#${t.id})${score}`;
  } catch (error) {
    fail(error);
  }
}

function mapEvents() {
  const canvas = $("#map-canvas");
  canvas.addEventListener("mousedown", (e) => (mapView.drag = { x: e.clientX, y: e.clientY, moved: false }));
  window.addEventListener("mouseup", (e) => {
    const drag = mapView.drag;
    mapView.drag = null;
    if (drag && !drag.moved && e.target === canvas) {
      const i = nearestPoint(canvas, e.clientX, e.clientY);
      if (i >= 0) playPoint(i);
    }
  });
  window.addEventListener("mousemove", (e) => {
    const drag = mapView.drag;
    if (!drag) return;
    const ratio = canvas.width / canvas.getBoundingClientRect().width;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (!drag.moved) return;
    mapView.panX += dx * ratio;
    mapView.panY += dy * ratio;
    Object.assign(drag, { x: e.clientX, y: e.clientY });
    drawMap();
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const ratio = canvas.width / rect.width;
    const factor = e.deltaY < 0 ? 1.25 : 0.8;
    const mx = (e.clientX - rect.left) * ratio - canvas.width / 2, my = (e.clientY - rect.top) * ratio - canvas.height / 2;
    mapView.panX = mx - (mx - mapView.panX) * factor;
    mapView.panY = my - (my - mapView.panY) * factor;
    mapView.zoom *= factor;
    drawMap();
  }, { passive: false });
  window.addEventListener("resize", () => state.map && !$("#view-map").hidden && drawMap());
}

// --- start --------------------------------------------------------------------------------------

function start() {
  $("#search-form").addEventListener("submit", runSearch);
  $("#search-mode").addEventListener("change", searchMode);
  $("#teach-from-results").addEventListener("click", () => teachFrom(state.results));
  $("#tag-threshold").addEventListener("input", thresholdMoved);
  $("#tag-threshold-save").addEventListener("click", saveThreshold);
  $("#tag-teach").addEventListener("click", () => (location.hash = `#teach/${encodeURIComponent(state.tagDetail.tag.name)}`));
  $("#teach-form").addEventListener("submit", (e) => {
    e.preventDefault();
    openTeach($("#teach-name").value);
  });
  $("#teach-name").addEventListener("change", () => openTeach($("#teach-name").value, true));
  $("#answer-yes").addEventListener("click", () => answer("yes"));
  $("#answer-no").addEventListener("click", () => answer("no"));
  $("#answer-skip").addEventListener("click", () => answer("skip"));
  $("#answer-undo").addEventListener("click", undo);
  $("#map-method").replaceChildren(el("option", { value: "pca" }, "PCA"));
  $("#map-method").addEventListener("change", () => loadMap(true));
  $("#map-tag").addEventListener("change", colourMap);
  document.addEventListener("keydown", keys);
  window.addEventListener("hashchange", show);
  mapEvents();
  searchMode();
  loadTags();
  show();
}

start();
