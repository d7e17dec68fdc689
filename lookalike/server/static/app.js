// lookalike web page: vanilla JS, no build step, talks to the JSON API of `lookalike serve`.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const TOKEN_KEY = "lookalike.token";

const state = {
  query: null,        // {kind: "file", blob, name} | {kind: "id", id, path}
  filters: {},        // metadata keys from /api/filters
  limits: null,       // from /api/stats
  viewing: null,      // id shown in the viewer
  pending: 0,         // requests in flight (for the top progress bar)
};

// -- small helpers ----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);  // CSSOM: allowed by the CSP
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function basename(path) { return String(path).split(/[\\/]/).pop(); }
function fmtScore(s) { return Number(s).toFixed(3); }
function fmtBytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}
function thumbUrl(id, size = 256) { return `/api/images/${id}/thumbnail?size=${size}`; }

let toastTimer = null;
function toast(message, isError = false) {
  const box = $("#toast");
  box.textContent = message;
  box.classList.toggle("error", isError);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 6000 : 3000);
}

function setStatus(id, message, isError = false) {
  const box = $(id);
  box.textContent = message;
  box.classList.toggle("error", isError);
}

function busy(delta) {
  state.pending = Math.max(0, state.pending + delta);
  $("#busy").hidden = state.pending === 0;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

// fetch a JSON endpoint; errors become ApiError with the server's message
async function api(path, options = {}) {
  const opts = { ...options, headers: { ...(options.headers || {}) } };
  if (opts.auth) {
    delete opts.auth;
    if (token()) opts.headers.Authorization = `Bearer ${token()}`;
  }
  busy(+1);
  try {
    let response;
    try {
      response = await fetch(path, opts);
    } catch (err) {
      throw new ApiError(0, `the server cannot be reached (${err.message})`);
    }
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("application/json")) body = await response.json();
    if (!response.ok) {
      const detail = body && body.detail ? body.detail : `${response.status} ${response.statusText}`;
      if (response.status === 401) openSettings(detail);
      throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return body;
  } finally {
    busy(-1);
  }
}

function checkSize(file) {
  const limit = state.limits ? state.limits.max_upload_bytes : null;
  if (limit && file.size > limit) {
    throw new ApiError(413, `${file.name || "the image"} is ${fmtBytes(file.size)}; the server takes at most ${fmtBytes(limit)}`);
  }
}

// -- tabs ---------------------------------------------------------------------------------------

function showTab(name) {
  for (const button of $$(".tabs [role=tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const panel of $$("main > .tab")) panel.hidden = panel.id !== `tab-${name}`;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "add") refreshJobs();
}

function currentTab() {
  const selected = $(".tabs [aria-selected=true]");
  return selected ? selected.dataset.tab : "search";
}

// -- stats and filters --------------------------------------------------------------------------

async function loadStats() {
  try {
    const stats = await api("/api/stats");
    state.limits = stats.limits;
    const n = stats.images;
    $("#stats").textContent = `${n} image${n === 1 ? "" : "s"}`;
    $("#paths-box").hidden = !stats.limits.server_paths;
  } catch (err) {
    $("#stats").textContent = "offline";
  }
}

function isNumeric(spec) {
  const type = String(spec.type || "").toLowerCase();
  return ["number", "numeric", "int", "integer", "float", "real"].includes(type)
    || (spec.min !== undefined && typeof spec.min === "number" && !Array.isArray(spec.values));
}

function distinctValues(spec) {
  const values = spec.values || spec.distinct || spec.examples;
  if (!values) return null;
  if (Array.isArray(values)) return values.map((v) => (v && typeof v === "object" ? v.value : v));
  if (typeof values === "object") return Object.keys(values);
  return null;
}

async function loadFilters() {
  let data;
  try {
    data = await api("/api/filters");
  } catch (err) {
    return;
  }
  const folder = $("#folder");
  const chosen = folder.value;
  folder.replaceChildren(el("option", { value: "" }, "all folders"));
  for (const f of data.folders || []) {
    folder.append(el("option", { value: f.path, title: f.path }, `${f.path} (${f.images})`));
  }
  folder.value = chosen;
  state.filters = data.metadata || {};
  const box = $("#meta-filters");
  const previous = readMetaFilters();
  box.replaceChildren();
  for (const [key, spec] of Object.entries(state.filters)) {
    if (key === "path") continue;
    const label = `${key}`;
    if (isNumeric(spec)) {
      const lo = el("input", { type: "number", step: "any", placeholder: spec.min ?? "min", "aria-label": `${key} from`, dataset: { key, op: "gte" } });
      const hi = el("input", { type: "number", step: "any", placeholder: spec.max ?? "max", "aria-label": `${key} to`, dataset: { key, op: "lte" } });
      box.append(el("label", { class: "field" }, label, el("div", { class: "range" }, lo, "–", hi)));
    } else {
      const values = distinctValues(spec);
      if (values && values.length && spec.values_complete === false) {
        const listId = `values-${key.replace(/[^\w-]/g, "_")}`;
        box.append(el("label", { class: "field" }, label,
          el("input", { type: "text", list: listId, placeholder: "equals…", "aria-label": key, dataset: { key, op: "eq" } }),
          el("datalist", { id: listId }, values.slice(0, 500).map((v) => el("option", { value: String(v) })))));
      } else if (values && values.length) {
        const select = el("select", { "aria-label": key, dataset: { key, op: "eq" } }, el("option", { value: "" }, "any"));
        for (const v of values.slice(0, 500)) select.append(el("option", { value: String(v) }, String(v)));
        box.append(el("label", { class: "field" }, label, select));
      } else {
        box.append(el("label", { class: "field" }, label,
          el("input", { type: "text", placeholder: "equals…", "aria-label": key, dataset: { key, op: "eq" } })));
      }
    }
  }
  for (const input of $$("[data-key]", box)) {
    const old = previous[`${input.dataset.key}:${input.dataset.op}`];
    if (old !== undefined) input.value = old;
  }
}

function readMetaFilters() {
  const out = {};
  for (const input of $$("#meta-filters [data-key]")) {
    if (input.value !== "") out[`${input.dataset.key}:${input.dataset.op}`] = input.value;
  }
  return out;
}

// the filter as the API takes it: {"where": JSON or expression, "folder": ...}
function filterParams() {
  const where = {};
  for (const input of $$("#meta-filters [data-key]")) {
    if (input.value === "") continue;
    const { key, op } = input.dataset;
    const spec = state.filters[key] || {};
    let value = input.value;
    if (op !== "eq" || isNumeric(spec)) value = Number(value);
    if (op === "eq") {
      const values = distinctValues(spec);
      if (values) {
        const original = values.find((v) => String(v) === input.value);
        if (original !== undefined) value = original;
      }
      where[key] = value;
    } else {
      where[key] = { ...(typeof where[key] === "object" ? where[key] : {}), [op]: value };
    }
  }
  const params = new URLSearchParams();
  const text = $("#where-text").value.trim();
  const parts = [];
  if (Object.keys(where).length) parts.push(where);
  if (text && parts.length) {
    params.set("where", `${dictToExpression(where)} and (${text})`);
  } else if (text) {
    params.set("where", text);
  } else if (parts.length) {
    params.set("where", JSON.stringify(where));
  }
  if ($("#folder").value) params.set("folder", $("#folder").value);
  return params;
}

function quote(value) {
  return typeof value === "number" ? String(value) : `"${String(value).replaceAll('"', '""')}"`;
}

function dictToExpression(where) {
  const ops = { gte: ">=", lte: "<=", gt: ">", lt: "<" };
  const parts = [];
  for (const [key, value] of Object.entries(where)) {
    const field = `\`${key}\``;
    if (value && typeof value === "object") {
      for (const [op, v] of Object.entries(value)) parts.push(`${field} ${ops[op]} ${quote(v)}`);
    } else {
      parts.push(`${field} = ${quote(value)}`);
    }
  }
  return parts.join(" and ");
}

// -- search -------------------------------------------------------------------------------------

function setQueryFile(file) {
  try {
    checkSize(file);
  } catch (err) {
    setStatus("#search-status", err.message, true);
    return;
  }
  state.query = { kind: "file", blob: file, name: file.name || "pasted image" };
  const preview = $("#query-preview");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  preview.dataset.url = URL.createObjectURL(file);
  preview.src = preview.dataset.url;
  preview.hidden = false;
  $("#query-label").textContent = state.query.name;
  runSearch();
}

function setQueryId(id, path) {
  state.query = { kind: "id", id, path };
  const preview = $("#query-preview");
  preview.src = thumbUrl(id, 384);
  preview.hidden = false;
  $("#query-label").textContent = `more like ${basename(path || `#${id}`)}`;
  showTab("search");
  runSearch();
}

function queryText() { return $("#text-query").value.trim(); }
function hasQuery() { return Boolean(state.query || queryText()); }

function clearQueryImage() {
  state.query = null;
  const preview = $("#query-preview");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  delete preview.dataset.url;
  preview.removeAttribute("src");
  preview.hidden = true;
  $("#query-label").textContent = "";
  updateQueryControls();
  if (queryText()) runSearch();
  else {
    $("#results").replaceChildren();
    $("#text-read").hidden = true;
    setStatus("#search-status", "Search by image (drop, paste or choose a picture) or by words.");
  }
}

function updateQueryControls() {
  $("#query-clear").hidden = !state.query;
  $("#weight-field").hidden = !(state.query && queryText());
}

// how the server read the words: the concepts it matched, or why it could not
function showTextRead(info) {
  const box = $("#text-read");
  if (!info) { box.hidden = true; return; }
  const names = (info.concepts || []).map((c) => `${c.concept} (${Number(c.similarity).toFixed(2)})`);
  const read = info.model === "concepts"
    ? (names.length ? `Read as: ${names.join(", ")}` : "No concept matched")
    : `Compared in the space of ${info.model}`;
  box.textContent = info.warning ? `${read}. ${info.warning}` : read;
  box.classList.toggle("warn", Boolean(info.warning));
  box.hidden = false;
}

let searchSeq = 0;
async function runSearch() {
  const q = state.query;
  const text = queryText();
  updateQueryControls();
  if (!q && !text) {
    setStatus("#search-status", "Choose a query image or type some words first.");
    return;
  }
  const seq = ++searchSeq;
  const params = filterParams();
  params.set("k", $("#k").value);
  const weight = $("#weight").value;
  setStatus("#search-status", "Searching…");
  $("#results").setAttribute("aria-busy", "true");
  const started = performance.now();
  try {
    let data;
    if (!q || q.kind === "file") {
      const form = new FormData();
      if (q) form.append("image", q.blob, q.name);
      if (text) {
        form.append("text", text);
        form.append("weight", weight);
      }
      data = await api(`/api/search?${params}`, { method: "POST", body: form });
    } else {
      if (text) {
        params.set("text", text);
        params.set("weight", weight);
      }
      data = await api(`/api/search/by-id/${q.id}?${params}`, { method: "POST" });
    }
    if (seq !== searchSeq) return;
    renderResults(data.results, q);
    showTextRead(data.text);
    const ms = Math.round(performance.now() - started);
    const filtered = params.has("where") || params.has("folder") ? " (filtered)" : "";
    setStatus("#search-status", data.results.length
      ? `${data.results.length} results${filtered} in ${ms} ms`
      : `No results${filtered}.`);
  } catch (err) {
    if (seq !== searchSeq) return;
    setStatus("#search-status", err.message, true);
    $("#results").replaceChildren();
    $("#text-read").hidden = true;
  } finally {
    if (seq === searchSeq) $("#results").removeAttribute("aria-busy");
  }
}

// file name, then its folder (cut at the start when long), full path as tooltip
function pathLines(path) {
  const cut = String(path).lastIndexOf("/");
  const folder = cut > 0 ? path.slice(0, cut) : "";
  return el("div", { class: "path", title: path },
    el("div", { class: "name" }, basename(path)),
    folder ? el("div", { class: "folder" }, el("bdi", {}, folder)) : null);
}

function chips(metadata) {
  const entries = Object.entries(metadata || {}).slice(0, 4);
  if (!entries.length) return null;
  return el("div", { class: "chips" }, entries.map(([k, v]) => el("span", { class: "chip", title: `${k}: ${v}` }, `${k}: ${v}`)));
}

function resultCard(hit, rank, query) {
  const self = query && query.kind === "id" && query.id === hit.id;
  const card = el("figure", { class: `card${self ? " self" : ""}`, dataset: { id: hit.id, path: hit.path } },
    el("button", { type: "button", class: "thumb", title: "View large", onclick: () => openViewer(hit.id) },
      el("img", { src: thumbUrl(hit.id), alt: basename(hit.path), loading: "lazy", width: 256, height: 256 })),
    el("figcaption", {},
      el("div", { class: "line1" },
        el("span", { class: "score", title: `distance ${hit.distance}` }, fmtScore(hit.score)),
        el("span", { class: "rank" }, `#${rank}`)),
      el("div", { class: "scorebar" }, el("div", { style: { width: `${Math.max(0, Math.min(1, hit.score)) * 100}%` } })),
      pathLines(hit.path),
      chips(hit.metadata),
      el("button", { type: "button", class: "more", onclick: () => setQueryId(hit.id, hit.path) }, "More like this")));
  return card;
}

function renderResults(results, query) {
  $("#results").replaceChildren(...results.map((hit, i) => resultCard(hit, i + 1, query)));
}

// -- the viewer ---------------------------------------------------------------------------------

async function openViewer(id) {
  state.viewing = id;
  const dialog = $("#viewer");
  $("#viewer-img").src = `/api/images/${id}/view`;
  $("#viewer-path").textContent = "";
  $("#viewer-size").textContent = "";
  $("#viewer-meta").replaceChildren();
  if (!dialog.open) dialog.showModal();
  try {
    const info = await api(`/api/images/${id}`);
    if (state.viewing !== id) return;
    $("#viewer-path").textContent = info.path;
    $("#viewer-size").textContent = `${info.width} × ${info.height} px · ${fmtBytes(info.size)} · id ${info.id}`;
    const rows = Object.entries(info.metadata || {}).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v))));
    $("#viewer-meta").replaceChildren(...rows);
  } catch (err) {
    $("#viewer-path").textContent = err.message;
  }
}

async function deleteViewed() {
  const id = state.viewing;
  if (id == null) return;
  if (!token()) {
    openSettings("Deleting needs the token.");
    return;
  }
  if (!confirm("Remove this image from the index? (Files you indexed from disk stay on disk.)")) return;
  try {
    await api(`/api/images/${id}`, { method: "DELETE", auth: true });
    $("#viewer").close();
    for (const card of $$(`.card[data-id="${id}"]`)) card.remove();
    toast("Removed from the index.");
    loadStats();
  } catch (err) {
    toast(err.message, true);
  }
}

// -- duplicates ---------------------------------------------------------------------------------

async function runDups(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams({ preset: $("#dups-preset").value });
  const threshold = $("#dups-threshold").value;
  if (threshold) params.set("threshold", threshold);
  setStatus("#dups-status", "Looking for duplicates…");
  $("#dups").replaceChildren();
  try {
    const data = await api(`/api/duplicates?${params}`);
    setStatus("#dups-status", data.total_groups
      ? `${data.total_groups} groups, ${data.total_files} files; ${data.to_remove} could go (green: the one to keep).`
        + (data.groups.length < data.total_groups ? ` Showing the first ${data.groups.length}.` : "")
      : "No duplicates found.");
    $("#dups").replaceChildren(...data.groups.map((group, n) => el("section", { class: "group" },
      el("h3", {}, `Group ${n + 1}: ${group.files.length} files, similarity ≥ ${fmtScore(group.score)}`),
      el("div", { class: "grid" }, group.files.map((f) => el("figure", { class: `card${f.keep ? " keep" : ""}`, dataset: { id: f.id, path: f.path } },
        el("button", { type: "button", class: "thumb", title: "View large", onclick: () => openViewer(f.id) },
          el("img", { src: thumbUrl(f.id), alt: basename(f.path), loading: "lazy" })),
        el("figcaption", {},
          el("span", { class: `tag ${f.keep ? "tag-keep" : "tag-dup"}` }, f.keep ? "keep" : "duplicate"),
          pathLines(f.path),
          el("div", { class: "muted" }, `${f.width}×${f.height} · ${fmtBytes(f.size)}`))))))));
  } catch (err) {
    setStatus("#dups-status", err.message, true);
  }
}

// -- copy check ---------------------------------------------------------------------------------

async function runCheck(file) {
  try {
    checkSize(file);
  } catch (err) {
    setStatus("#check-status", err.message, true);
    return;
  }
  const url = URL.createObjectURL(file);
  setStatus("#check-status", "Checking: searching regions, verifying the best candidates…");
  $("#check-result").replaceChildren(el("figure", { class: "pending" },
    el("img", { src: url, alt: "suspect image", class: "source-img" }),
    el("div", { class: "bar indeterminate" }, el("div"))));
  const form = new FormData();
  form.append("image", file, file.name || "pasted image");
  try {
    const r = await api("/api/check", { method: "POST", body: form });
    setStatus("#check-status", "");
    renderCheck(r, url, file.name || "pasted image");
  } catch (err) {
    setStatus("#check-status", err.message, true);
  }
}

function renderCheck(r, queryUrl, name) {
  const ev = r.evidence || {};
  const copy = r.verdict === "copy";
  const target = r.match || r.nearest;
  const verdict = el("div", { class: `verdict ${r.verdict}`, id: "check-verdict" },
    copy ? `Copy of ${target.path}` : "No copy found",
    el("div", { class: "meter", title: "score (0.5 = decision threshold)" },
      el("div", { style: { width: `${Math.round(r.score * 100)}%` } }), el("span", { class: "mark" })),
    el("div", { class: "small muted" }, `score ${fmtScore(r.score)} (0.5 is the threshold; higher is surer)`));
  const queryFig = el("figure", {},
    el("div", { class: "boxed" }, el("img", { src: queryUrl, alt: "suspect image" })),
    el("figcaption", {}, `query: ${name}${ev.region ? ` · matched region: ${ev.region}` : ""}`));
  if (copy && r.region_box) {
    const [x0, y0, x1, y1] = r.region_box;
    if (!(x0 === 0 && y0 === 0 && x1 === 1 && y1 === 1)) {
      $(".boxed", queryFig).append(el("div", { class: "region", style: { left: `${x0 * 100}%`, top: `${y0 * 100}%`, width: `${(x1 - x0) * 100}%`, height: `${(y1 - y0) * 100}%` } }));
    }
  }
  const figures = [queryFig];
  if (target) {
    figures.push(el("figure", {},
      el("button", { type: "button", class: "plain-btn", onclick: () => openViewer(target.id) },
        el("img", { src: thumbUrl(target.id, 512), alt: basename(target.path), class: "source-img" })),
      el("figcaption", {}, `${copy ? "source" : "nearest"}: ${target.path}`)));
  }
  const rows = [
    ["verdict", r.verdict],
    ["score", fmtScore(r.score)],
    ["matching points (inliers)", `${ev.inliers ?? 0} (a copy needs ${ev.threshold ?? "?"})`],
    ["matches after ratio test", ev.matches ?? "–"],
    ["transform", ev.transform ?? "–"],
    ["mirrored", ev.flipped ? "yes" : "no"],
    ["similarity (cosine)", ev.cosine != null ? fmtScore(ev.cosine) : "–"],
    ["query region", ev.region ?? "–"],
    ["near-identical", ev.near_identical ? "yes" : "no"],
    ["time", ev.seconds != null ? `${(ev.seconds * 1000).toFixed(0)} ms` : "–"],
  ];
  const table = el("table", { class: "meta-table", id: "check-evidence" },
    rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
  const candidates = (ev.candidates || []).map((c) => el("tr", {},
    el("td", {}, basename(c.path)), el("td", {}, fmtScore(c.cosine)), el("td", {}, c.region), el("td", {}, c.inliers ?? "–")));
  $("#check-result").replaceChildren(verdict, el("div", { class: "compare" }, figures), table,
    candidates.length ? el("details", {}, el("summary", {}, "Candidates verified"),
      el("table", { class: "meta-table" }, el("tr", {}, el("th", {}, "file"), el("th", {}, "cosine"), el("th", {}, "region"), el("th", {}, "inliers")), candidates)) : null);
}

// -- add ----------------------------------------------------------------------------------------

let addFiles = [];

function chooseAddFiles(files) {
  addFiles = Array.from(files).filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|webp|gif|bmp|tiff?|heic|heif|avif)$/i.test(f.name));
  const total = addFiles.reduce((s, f) => s + f.size, 0);
  $("#add-chosen").textContent = addFiles.length ? `${addFiles.length} image(s), ${fmtBytes(total)}` : "";
  $("#add-upload").disabled = !addFiles.length;
}

function setBar(fraction) {
  const bar = $("#add-progress");
  bar.hidden = false;
  bar.classList.toggle("indeterminate", fraction == null);
  $("div", bar).style.width = fraction == null ? "" : `${Math.round(fraction * 100)}%`;
}

function uploadWithProgress(url, form) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    if (token()) xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        setBar(e.loaded / e.total * 0.3);
        setStatus("#add-status", `Uploading… ${fmtBytes(e.loaded)} of ${fmtBytes(e.total)}`);
      }
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const detail = body && body.detail ? body.detail : `${xhr.status} ${xhr.statusText}`;
        if (xhr.status === 401) openSettings(detail);
        reject(new ApiError(xhr.status, detail));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "the upload failed (connection closed; too large?)"));
    xhr.send(form);
  });
}

async function uploadAdd() {
  if (!addFiles.length) return;
  if (!token()) {
    openSettings("Adding images needs the token.");
    return;
  }
  const form = new FormData();
  for (const f of addFiles) form.append("files", f, f.name);
  const meta = $("#add-meta").value.trim();
  if (meta) {
    try { JSON.parse(meta); } catch (err) {
      setStatus("#add-status", `Metadata is not valid JSON: ${err.message}`, true);
      return;
    }
    form.append("metadata", meta);
  }
  const total = addFiles.reduce((s, f) => s + f.size, 0);
  if (state.limits && total > state.limits.max_upload_bytes) {
    setStatus("#add-status", `${fmtBytes(total)} is more than the server takes at once (${fmtBytes(state.limits.max_upload_bytes)}); choose fewer files.`, true);
    return;
  }
  $("#add-upload").disabled = true;
  setBar(0);
  try {
    const job = await uploadWithProgress("/api/images", form);
    await followJob(job, 0.3);
    chooseAddFiles([]);
    $("#add-input").value = "";
  } catch (err) {
    setStatus("#add-status", err.message, true);
    $("#add-progress").hidden = true;
  } finally {
    $("#add-upload").disabled = !addFiles.length;
  }
}

async function addPaths() {
  const paths = $("#add-paths").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!paths.length) return;
  const body = { paths };
  const metaFile = $("#add-meta-file").value.trim();
  if (metaFile) body.metadata = metaFile;
  setBar(null);
  setStatus("#add-status", "Starting…");
  try {
    const job = await api("/api/images/paths", {
      method: "POST", auth: true, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    await followJob(job, 0);
  } catch (err) {
    setStatus("#add-status", err.message, true);
    $("#add-progress").hidden = true;
  }
}

async function followJob(job, offset) {
  let current = job;
  while (current.status === "queued" || current.status === "running") {
    const fraction = current.total ? current.done / current.total : null;
    setBar(fraction == null ? null : offset + (1 - offset) * fraction);
    setStatus("#add-status", current.status === "queued"
      ? "Waiting for the writer…"
      : `Indexing… ${current.done}${current.total ? ` of ${current.total}` : ""} files`);
    await new Promise((resolve) => setTimeout(resolve, 400));
    current = await api(`/api/jobs/${current.id}`);
  }
  if (current.status === "failed") throw new ApiError(500, current.error || "the job failed");
  setBar(1);
  await refreshJobs();  // before "Done", so the list shows this job when the status says so
  const r = current.result || {};
  const errors = (r.errors || []).map((e) => `${basename(e.path)}: ${e.error}`);
  setStatus("#add-status", `Done: ${current.message}. ${r.images ?? ""} images in the collection.`
    + (errors.length ? ` Failed: ${errors.slice(0, 5).join("; ")}` : ""), errors.length > 0);
  loadStats();
  loadFilters();
  return current;
}

async function refreshJobs() {
  try {
    const jobs = await api("/api/jobs");
    if (!jobs.length) {
      $("#jobs").replaceChildren(el("li", { class: "muted" }, "none yet"));
      return;
    }
    $("#jobs").replaceChildren(...jobs.slice(0, 10).map((j) => el("li", {},
      `${new Date(j.created * 1000).toLocaleTimeString()} · ${j.kind} · ${j.status}`
      + (j.total ? ` · ${j.done}/${j.total}` : "") + (j.message ? ` · ${j.message}` : "")
      + (j.error ? ` · ${j.error}` : ""))));
  } catch (err) { /* shown elsewhere */ }
}

// -- token --------------------------------------------------------------------------------------

function openSettings(message) {
  const dialog = $("#settings");
  $("#settings-msg").hidden = !message;
  $("#settings-msg").textContent = message || "";
  $("#token-input").value = token();
  if (!dialog.open) dialog.showModal();
}

function updateTokenNote() { $("#add-token-note").hidden = Boolean(token()); }

// -- input: drop, paste, pick -------------------------------------------------------------------

function imageFrom(dataTransfer) {
  if (!dataTransfer) return null;
  for (const item of dataTransfer.items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  for (const file of dataTransfer.files || []) {
    if (file.type.startsWith("image/") || /\.(heic|heif|avif)$/i.test(file.name)) return file;
  }
  return null;
}

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles(e.dataTransfer);
  });
  zone.addEventListener("click", (e) => {
    if (e.target.closest("label, input, button")) return;
    const input = $("input[type=file]", zone);
    if (input) input.click();
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      const input = $("input[type=file]", zone);
      if (input) input.click();
    }
  });
}

function init() {
  for (const button of $$(".tabs [role=tab]")) button.addEventListener("click", () => showTab(button.dataset.tab));
  const start = location.hash.slice(1);
  if (["search", "dups", "check", "add"].includes(start)) showTab(start);

  $("#file-input").addEventListener("change", (e) => { if (e.target.files[0]) setQueryFile(e.target.files[0]); });
  dropZone($("#drop"), (dt) => { const f = imageFrom(dt); if (f) setQueryFile(f); else toast("That is not an image.", true); });
  $("#apply-filters").addEventListener("click", runSearch);
  $("#clear-filters").addEventListener("click", () => {
    for (const input of $$("#meta-filters [data-key]")) input.value = "";
    $("#folder").value = "";
    $("#where-text").value = "";
    if (hasQuery()) runSearch();
  });
  $("#where-text").addEventListener("keydown", (e) => { if (e.key === "Enter") runSearch(); });
  $("#k").addEventListener("change", () => { if (hasQuery()) runSearch(); });
  $("#folder").addEventListener("change", () => { if (hasQuery()) runSearch(); });
  $("#text-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  $("#text-query").addEventListener("input", updateQueryControls);
  $("#query-clear").addEventListener("click", clearQueryImage);
  $("#weight").addEventListener("input", () => { $("#weight-out").textContent = $("#weight").value; });
  $("#weight").addEventListener("change", () => { if (state.query && queryText()) runSearch(); });

  $("#dups-form").addEventListener("submit", runDups);

  $("#check-input").addEventListener("change", (e) => { if (e.target.files[0]) runCheck(e.target.files[0]); });
  dropZone($("#check-drop"), (dt) => { const f = imageFrom(dt); if (f) runCheck(f); else toast("That is not an image.", true); });

  $("#add-input").addEventListener("change", (e) => chooseAddFiles(e.target.files));
  dropZone($("#add-drop"), (dt) => chooseAddFiles(dt.files));
  $("#add-upload").addEventListener("click", uploadAdd);
  $("#add-paths-run").addEventListener("click", addPaths);

  // paste anywhere: a query for the search, or the suspect of the copy check
  document.addEventListener("paste", (e) => {
    if (e.target.closest && e.target.closest("input, textarea")) return;
    const file = imageFrom(e.clipboardData);
    if (!file) return;
    e.preventDefault();
    if (currentTab() === "check") runCheck(file);
    else {
      showTab("search");
      setQueryFile(file);
    }
  });
  // a file dropped anywhere on the search page is a query
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    if (currentTab() !== "search") return;
    const file = imageFrom(e.dataTransfer);
    if (file) setQueryFile(file);
  });

  $("#viewer-close").addEventListener("click", () => $("#viewer").close());
  $("#viewer").addEventListener("click", (e) => { if (e.target === $("#viewer")) $("#viewer").close(); });
  $("#viewer-more").addEventListener("click", () => {
    const id = state.viewing;
    $("#viewer").close();
    setQueryId(id, $("#viewer-path").textContent);
  });
  $("#viewer-delete").addEventListener("click", deleteViewed);

  $("#settings-btn").addEventListener("click", () => openSettings(""));
  for (const b of $$("[data-open-settings]")) b.addEventListener("click", () => openSettings(""));
  $("#settings").addEventListener("close", () => {
    const action = $("#settings").returnValue;
    if (action === "save") {
      const value = $("#token-input").value.trim();
      if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
      toast(value ? "Token saved in this browser." : "Token removed.");
    } else if (action === "forget") {
      localStorage.removeItem(TOKEN_KEY);
      toast("Token removed.");
    }
    updateTokenNote();
  });
  updateTokenNote();
  if (window.matchMedia("(max-width: 760px)").matches) $("details.filters").open = false;
  loadStats();
  loadFilters();
}

document.addEventListener("DOMContentLoaded", init);
