// snappy's search page: plain JS, no dependencies. Every string from a document (region text,
// file names, URIs) is set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search");
const statusEl = $("status");
const resultsEl = $("results");
const timings = (window.snappyTimings = {});  // read by the browser tests and the paint benchmark

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", isError);
}

// Paths are relative: the page works wherever the app is mounted (`/`, or a route prefix).
// ------------------------------------------------------------------ URL state
const FIELDS = { q: "q", level: "level", threshold: "threshold", k: "k" };

function readUrl() {
  const p = new URLSearchParams(location.search);
  for (const [param, id] of Object.entries(FIELDS)) if (p.has(param)) $(id).value = p.get(param);
  $("map").checked = p.get("map") === "1";
  return p.get("q");
}

function writeUrl() {
  const p = new URLSearchParams();
  for (const [param, id] of Object.entries(FIELDS)) if ($(id).value) p.set(param, $(id).value.trim());
  if ($("map").checked) p.set("map", "1");
  history.replaceState(null, "", "?" + p.toString());
}

// ------------------------------------------------------------------ errors a person understands
async function explain(resp) {
  let body = {};
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (resp.status === 503 && body.status === "starting") return "The service is still starting (loading the index). Try again in a few seconds.";
  if (resp.status === 503 && (body.table || body.status === "damaged")) {
    const where = body.table ? ` (table ${body.table}${body.file ? ", file " + body.file : ""})` : "";
    return `The index is damaged${where}: ${body.cause || body.error || (body.problems || []).join("; ")}. Run \`snappy inspect\` on it.`;
  }
  if (resp.status === 400 && body.field === "query") return `This query cannot be searched: ${body.error}`;
  if (resp.status === 400) return `Bad request (${body.field || "request"}): ${body.error}`;
  if (resp.status === 413) return "The request is too large.";
  return `The service answered ${resp.status}${body.error ? ": " + body.error : ""}.`;
}

// ------------------------------------------------------------------ search
let searchSeq = 0;

async function search() {
  const query = $("q").value.trim();
  writeUrl();
  if (!query) { setStatus("Type a query to search the index.", true); resultsEl.replaceChildren(); return; }
  const seq = ++searchSeq;
  const t0 = performance.now();
  timings.started = t0; timings.firstImageMs = null; timings.renderedMs = null;
  setStatus("Searching…");
  const body = { query, level: $("level").value, threshold: $("threshold").value.trim() || "gap",
                 top_pages: Number($("k").value) || 5, patch_maps: $("map").checked };
  let resp;
  try {
    resp = await fetch("query", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    if (seq === searchSeq) setStatus("The service cannot be reached. Is `snappy serve` running?", true);
    return;
  }
  if (seq !== searchSeq) return;  // a newer search replaced this one
  if (!resp.ok) { resultsEl.replaceChildren(); setStatus(await explain(resp), true); return; }
  const pages = await resp.json();
  timings.responseMs = performance.now() - t0;
  if (!pages.length) {
    resultsEl.replaceChildren();
    setStatus(resp.headers.get("X-Snappy-Reason") || "Nothing matched this query.", true);
    return;
  }
  const snap = resp.headers.get("X-Snappy-Snapshot");
  setStatus(`${pages.length} page${pages.length > 1 ? "s" : ""}${snap ? " · snapshot " + snap : ""} · ${Math.round(timings.responseMs)} ms`);
  resultsEl.replaceChildren(...pages.map((p) => renderPage(p, t0, seq)));
  timings.renderedMs = performance.now() - t0;
}

// ------------------------------------------------------------------ one result page
function imageWidth(page) {
  // the stored JPEG, scaled to what the view shows (a few fixed sizes, so the server's cache hits)
  const css = Math.min(resultsEl.clientWidth || 800, 900) * (window.devicePixelRatio || 1);
  const w = [400, 800, 1200, 1600].find((s) => s >= css) || 1600;
  return Math.min(w, page.width);
}

function renderPage(page, t0, seq) {
  const view = el("div", { class: "page-view" });
  const img = el("img", { alt: `page ${page.page_number} of ${page.uri}`, width: String(page.width), height: String(page.height),
                          loading: page.rank === 1 ? "eager" : "lazy", decoding: "async",
                          src: `pages/${encodeURIComponent(page.page_id)}/image?w=${imageWidth(page)}` });
  img.addEventListener("load", () => {  // this search's first decoded page image
    if (seq === searchSeq && timings.firstImageMs == null) timings.firstImageMs = performance.now() - t0;
  }, { once: true });
  view.append(img);
  const list = el("ol", { class: "regions", "aria-label": `regions of page ${page.page_number}` });
  page.regions.forEach((r, i) => {
    const [x0, y0, x1, y1] = r.bbox;
    const bbox = r.bbox.map((v) => Math.round(v * 10) / 10).join(",");
    const box = el("div", { class: "box", "data-region-id": r.region_id, "data-bbox": bbox, title: r.text },
                   el("span", { class: "num", text: String(i + 1) }));
    box.style.left = `${(100 * x0) / page.width}%`;
    box.style.top = `${(100 * y0) / page.height}%`;
    box.style.width = `${(100 * (x1 - x0)) / page.width}%`;
    box.style.height = `${(100 * (y1 - y0)) / page.height}%`;
    view.append(box);
    const copy = el("button", { type: "button", class: "secondary", "aria-label": `copy region ${i + 1}`, text: "copy" });
    copy.addEventListener("click", () => copyText(r.text, copy));
    const item = el("li", { tabindex: "0", "data-region-id": r.region_id, "data-bbox": bbox },
                    el("span", { class: "num", text: String(i + 1) }), el("span", { class: "text", text: r.text }), copy,
                    el("span", { class: "facts", text: `score ${r.score.toFixed(3)} · ${r.level || "line"} · box ${bbox}` }));
    for (const node of [box, item]) {
      node.addEventListener("mouseenter", () => hot(r.region_id, true));
      node.addEventListener("mouseleave", () => hot(r.region_id, false));
    }
    item.addEventListener("focus", () => hot(r.region_id, true));
    item.addEventListener("blur", () => hot(r.region_id, false));
    list.append(item);
  });
  const side = el("div", { class: "side" });
  if (page.map) side.append(mapControls(page, view));
  side.append(list);
  const title = el("h2", {}, el("span", { text: `#${page.rank} ${page.uri}` }),
                   el("span", { class: "meta", text: ` · page ${page.page_number} · score ${page.score.toFixed(3)}` }));
  const art = el("article", { class: "result", "data-page-id": page.page_id }, title);
  if (page.reason) art.append(el("p", { class: "note", text: `No region selected on this page: ${page.reason}.` }));
  art.append(view, side);
  return art;
}

function hot(regionId, on) {
  for (const n of document.querySelectorAll(`[data-region-id="${CSS.escape(regionId)}"]`)) n.classList.toggle("hot", on);
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "copied";
  } catch (e) {
    button.textContent = "copy failed";  // clipboard needs a secure context (https or localhost)
  }
  setTimeout(() => { button.textContent = "copy"; }, 1500);
}

// ------------------------------------------------------------------ similarity maps
function mapControls(page, view) {
  const canvas = el("canvas", { class: "heat", width: String(page.width), height: String(page.height), "aria-hidden": "true" });
  view.append(canvas);
  const select = el("select", { "aria-label": "similarity map of" });
  select.append(el("option", { value: "-1", text: "all query tokens (max)" }));
  page.map.tokens.forEach((t, i) => select.append(el("option", { value: String(i), text: `token ${i + 1}: ${t}` })));
  select.addEventListener("change", () => drawMap(canvas, page, Number(select.value)));
  drawMap(canvas, page, -1);
  return el("label", { class: "tokens" }, "map: ", select);
}

function drawMap(canvas, page, token) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const scores = token < 0 ? page.map.max : page.map.token_scores[token];
  let hi = 0;
  for (const s of scores) if (s > hi) hi = s;
  canvas.dataset.token = String(token);
  canvas.dataset.max = String(hi);
  if (hi <= 0) return;
  page.map.boxes.forEach(([x0, y0, x1, y1], i) => {
    const v = Math.max(0, scores[i]) / hi;
    if (v <= 0) return;
    ctx.fillStyle = `rgba(232, 89, 12, ${(0.85 * v).toFixed(3)})`;
    ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
  });
}

// ------------------------------------------------------------------ the index panel
async function loadIndexPanel() {
  const panel = $("index-panel");
  panel.replaceChildren(el("p", { text: "Loading…" }));
  let info;
  try {
    const resp = await fetch("api/index");
    if (!resp.ok) { panel.replaceChildren(el("p", { text: await explain(resp) })); return; }
    info = await resp.json();
  } catch (e) {
    panel.replaceChildren(el("p", { text: "The service cannot be reached." }));
    return;
  }
  const rows = (pairs) => el("table", {}, ...pairs.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: String(v ?? "-") }))));
  const tables = info.tables || {};
  const docs = tables.documents || {};
  const latest = info.snapshot ? info.snapshot.seq : null;
  const parts = [
    el("h2", { text: `Index ${info.index}` }),
    rows([["snapshot served", info.served_snapshot ?? "-"], ["latest snapshot", latest],
          ["documents", docs.rows], ["by status", Object.entries(docs.status || {}).map(([k, v]) => `${k} ${v}`).join(", ")],
          ["pages", (tables.pages || {}).rows], ["regions", (tables.regions || {}).rows],
          ["encoder", (docs.encoders || []).join(", ")], ["being written", info.writer || "no"],
          ["intact", info.intact ? "yes" : "no: " + (info.problems || []).join("; ")]]),
  ];
  if (info.lease && info.lease.state === "stale") parts.push(el("p", { text: `Stale lease: ${info.lease.holder_text}, but ${info.lease.stale_reason}.` }));
  if (info.no_tables) parts.push(el("p", { text: info.no_tables }));
  if ((info.runs || []).length) {
    parts.push(el("h3", { text: "Last runs" }));
    parts.push(el("table", {}, el("tr", {}, ...["run", "status", "started", "duration", "indexed", "failed"].map((h) => el("th", { text: h }))),
      ...info.runs.map((r) => el("tr", {}, ...[r.run_id, r.status + (r.dead ? `, dead: ${r.dead}` : ""), r.started_at ? new Date(r.started_at * 1000).toISOString().replace("T", " ").slice(0, 19) : "-",
        r.duration_s != null ? `${r.duration_s.toFixed(1)} s` : "-", (r.documents || r.progress || {}).indexed ?? "", (r.documents || r.progress || {}).failed ?? ""]
        .map((v) => el("td", { text: String(v) }))))));
  }
  parts.push(el("h3", { text: `Documents not indexed or not up to date (${(info.failed || []).length})` }));
  if ((info.failed || []).length) {
    parts.push(el("table", {}, el("tr", {}, ...["file", "status", "attempts", "reason"].map((h) => el("th", { text: h }))),
      ...info.failed.map((f) => el("tr", {}, el("td", { class: "path", text: f.uri }), el("td", { text: f.status }),
        el("td", { text: String(f.attempts || 0) }), el("td", { text: f.error || "" })))));
  }
  panel.replaceChildren(...parts);
}

$("index-toggle").addEventListener("click", () => {
  const panel = $("index-panel");
  const open = panel.hidden;
  panel.hidden = !open;
  $("index-toggle").setAttribute("aria-expanded", String(open));
  if (open) loadIndexPanel();
});

form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("map").addEventListener("change", () => { if ($("q").value.trim()) search(); });
if (readUrl()) search();
