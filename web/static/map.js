// The Map page: every photo as a point drawn with WebGL (2-D canvas without it); pan, zoom, hover
// thumbnails, click to open, lasso to select and label many at once. Plain WebGL, no library:
// regl (under regl-scatterplot) compiles its shaders' glue with Function(), which the CSP forbids.
"use strict";

(function () {
  const root = document.getElementById("map-page");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const stage = $("map-stage");
  const canvas = $("map-canvas");
  const overlay = $("map-overlay");
  const octx = overlay.getContext("2d");

  // Tableau 20: distinguishable categories; a label keeps its colour in every mode.
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"].map(hex);
  const NONE = [190, 196, 205];
  const LOW = [215, 48, 39], MID = [254, 224, 139], HIGH = [26, 152, 80];
  const BATCH = 1000; // POST /api/labels takes at most this many ids

  let data = null; // the API payload
  let n = 0;
  let xs = new Float32Array(0), ys = new Float32Array(0);
  let selected = new Uint8Array(0);
  let selectedCount = 0;
  let order = new Uint32Array(0); // drawing order: uncoloured first, selected last
  const view = { cx: 0, cy: 0, zoom: 0.92 };
  let mode = "pan";
  let renderer = null;
  let grid = null;
  let dirty = true;
  let hovered = -1;
  let pollTimer = null;

  function hex(h) {
    return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
  }
  function mix(a, b, t) {
    return a.map((v, i) => Math.round(v + (b[i] - v) * t));
  }
  function swatch(c) {
    // Set through the CSSOM: the CSP refuses style attributes.
    const node = LK.el("span", { class: "swatch" });
    node.style.background = `rgb(${c[0]},${c[1]},${c[2]})`;
    return node;
  }

  // -- geometry: world [-1, 1] <-> CSS pixels of the stage ------------------------------------------

  function size() {
    return { w: stage.clientWidth, h: stage.clientHeight };
  }
  function unit() {
    const { w, h } = size();
    return (Math.min(w, h) / 2) * view.zoom;
  }
  function toScreen(x, y) {
    const { w, h } = size();
    const u = unit();
    return [w / 2 + (x - view.cx) * u, h / 2 - (y - view.cy) * u];
  }
  function toWorld(sx, sy) {
    const { w, h } = size();
    const u = unit();
    return [view.cx + (sx - w / 2) / u, view.cy - (sy - h / 2) / u];
  }

  // -- drawing -------------------------------------------------------------------------------------

  function webgl() {
    const gl = canvas.getContext("webgl", { antialias: false, alpha: false, preserveDrawingBuffer: true });
    if (!gl) return null;
    const shader = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const program = gl.createProgram();
    gl.attachShader(program, shader(gl.VERTEX_SHADER,
      "attribute vec2 p; attribute vec4 c; uniform vec2 s; uniform vec2 o; uniform float z; varying vec4 v;" +
      "void main() { gl_Position = vec4(p * s + o, 0.0, 1.0); gl_PointSize = z; v = c; }"));
    gl.attachShader(program, shader(gl.FRAGMENT_SHADER,
      "precision mediump float; varying vec4 v;" +
      "void main() { vec2 d = gl_PointCoord - 0.5; if (dot(d, d) > 0.25) discard; gl_FragColor = v; }"));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    gl.useProgram(program);
    const loc = { p: gl.getAttribLocation(program, "p"), c: gl.getAttribLocation(program, "c"),
      s: gl.getUniformLocation(program, "s"), o: gl.getUniformLocation(program, "o"), z: gl.getUniformLocation(program, "z") };
    const posBuf = gl.createBuffer();
    const colBuf = gl.createBuffer();
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
    let count = 0;
    return {
      kind: "webgl",
      set(positions, colours) {
        count = positions.length / 2;
        gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
        gl.bufferData(gl.ARRAY_BUFFER, positions, gl.STATIC_DRAW);
        gl.enableVertexAttribArray(loc.p);
        gl.vertexAttribPointer(loc.p, 2, gl.FLOAT, false, 0, 0);
        gl.bindBuffer(gl.ARRAY_BUFFER, colBuf);
        gl.bufferData(gl.ARRAY_BUFFER, colours, gl.STATIC_DRAW);
        gl.enableVertexAttribArray(loc.c);
        gl.vertexAttribPointer(loc.c, 4, gl.UNSIGNED_BYTE, true, 0, 0);
      },
      draw(pointSize) {
        const { w, h } = size();
        const u = unit();
        gl.viewport(0, 0, canvas.width, canvas.height);
        gl.clearColor(0.985, 0.988, 0.992, 1);
        gl.clear(gl.COLOR_BUFFER_BIT);
        const sx = (2 * u) / w, sy = (2 * u) / h;
        gl.uniform2f(loc.s, sx, sy);
        gl.uniform2f(loc.o, -view.cx * sx, -view.cy * sy);
        gl.uniform1f(loc.z, pointSize * (window.devicePixelRatio || 1));
        gl.drawArrays(gl.POINTS, 0, count);
      },
    };
  }

  function canvas2d() {
    // Without WebGL: the same picture with fillRect (measured fine to ~20k points, slow beyond).
    const ctx = canvas.getContext("2d");
    let positions = new Float32Array(0), colours = new Uint8Array(0);
    return {
      kind: "2d",
      set(p, c) { positions = p; colours = c; },
      draw(pointSize) {
        const dpr = window.devicePixelRatio || 1;
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        const { w, h } = size();
        ctx.fillStyle = "#fbfcfd";
        ctx.fillRect(0, 0, w, h);
        const r = pointSize / 2;
        for (let i = 0; i < positions.length / 2; i++) {
          const [sx, sy] = toScreen(positions[2 * i], positions[2 * i + 1]);
          if (sx < -r || sy < -r || sx > w + r || sy > h + r) continue;
          ctx.fillStyle = `rgba(${colours[4 * i]},${colours[4 * i + 1]},${colours[4 * i + 2]},${colours[4 * i + 3] / 255})`;
          ctx.fillRect(sx - r, sy - r, pointSize, pointSize);
        }
      },
    };
  }

  function pointSize() {
    const base = n > 200000 ? 1.5 : n > 50000 ? 2 : n > 10000 ? 3 : n > 1000 ? 5 : 9;
    return Math.min(base * Math.sqrt(Math.max(view.zoom, 1)), 24);
  }

  function resize() {
    const { w, h } = size();
    const dpr = window.devicePixelRatio || 1;
    for (const c of [canvas, overlay]) {
      c.width = Math.max(1, Math.round(w * dpr));
      c.height = Math.max(1, Math.round(h * dpr));
    }
    octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    dirty = true;
  }

  function frame() {
    if (dirty && renderer) {
      dirty = false;
      renderer.draw(pointSize());
      window.LKMap.draws++;
      if (n && !window.LKMap.drawnAt) window.LKMap.drawnAt = performance.now();
    }
    requestAnimationFrame(frame);
  }

  // -- colours -------------------------------------------------------------------------------------

  function colourMode() {
    return $("map-colour").value;
  }

  function colourOf(i, m) {
    const p = data.points;
    if (m === "label") return p.label[i] >= 0 ? PALETTE[p.label[i] % PALETTE.length] : null;
    if (m === "suggested") return p.suggested[i] >= 0 ? PALETTE[p.suggested[i] % PALETTE.length] : null;
    if (m === "folder") return PALETTE[p.folder[i] % PALETTE.length];
    if (p.suggested[i] < 0) return null;
    const t = p.confidence[i];
    return t < 0.5 ? mix(LOW, MID, t * 2) : mix(MID, HIGH, (t - 0.5) * 2);
  }

  function rebuild() {
    // Points without a colour are drawn first (underneath), selected ones last (on top).
    const m = colourMode();
    const colours = new Array(n);
    const rank = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      colours[i] = colourOf(i, m);
      rank[i] = selected[i] ? 2 : colours[i] ? 1 : 0;
    }
    order = new Uint32Array(n);
    let k = 0;
    for (const r of [0, 1, 2]) for (let i = 0; i < n; i++) if (rank[i] === r) order[k++] = i;
    const positions = new Float32Array(2 * n);
    const rgba = new Uint8Array(4 * n);
    const dim = selectedCount > 0;
    for (let j = 0; j < n; j++) {
      const i = order[j];
      positions[2 * j] = xs[i];
      positions[2 * j + 1] = ys[i];
      const c = colours[i] || NONE;
      rgba.set(selected[i] ? [20, 24, 32] : c, 4 * j);
      rgba[4 * j + 3] = dim && !selected[i] ? 70 : 230;
    }
    renderer.set(positions, rgba);
    legend(m);
    dirty = true;
  }

  function legend(m) {
    const list = $("map-legend");
    const p = data.points;
    if (m === "confidence") {
      list.replaceChildren(
        ...[[0.1, "low"], [0.5, "medium"], [0.95, "high"]].map(([t, text]) =>
          LK.el("li", {}, swatch(t < 0.5 ? mix(LOW, MID, t * 2) : mix(MID, HIGH, (t - 0.5) * 2)), text)),
        LK.el("li", {}, swatch(NONE), "no suggestion"));
      return;
    }
    const codes = m === "label" ? p.label : m === "suggested" ? p.suggested : p.folder;
    const names = m === "folder" ? data.folders.map((f) => f || "(top folder)") : data.labels;
    const counts = new Map();
    let none = 0;
    for (let i = 0; i < n; i++) {
      if (codes[i] < 0) none++;
      else counts.set(codes[i], (counts.get(codes[i]) || 0) + 1);
    }
    const rows = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 24).map(([code, count]) =>
      LK.el("li", {}, swatch(PALETTE[code % PALETTE.length]),
        names[code], LK.el("span", { class: "muted" }, ` ${count}`)));
    if (none) rows.push(LK.el("li", {}, swatch(NONE),
      m === "label" ? "unlabelled" : "no suggestion", LK.el("span", { class: "muted" }, ` ${none}`)));
    list.replaceChildren(...rows);
  }

  // -- finding points: a uniform grid over the world ------------------------------------------------------

  function buildGrid() {
    const g = Math.max(8, Math.min(512, Math.round(Math.sqrt(n / 4))));
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      x0 = Math.min(x0, xs[i]); x1 = Math.max(x1, xs[i]);
      y0 = Math.min(y0, ys[i]); y1 = Math.max(y1, ys[i]);
    }
    const cw = Math.max((x1 - x0) / g, 1e-9), ch = Math.max((y1 - y0) / g, 1e-9);
    const cell = (i) => Math.min(g - 1, Math.floor((xs[i] - x0) / cw)) * g + Math.min(g - 1, Math.floor((ys[i] - y0) / ch));
    const start = new Int32Array(g * g + 1);
    for (let i = 0; i < n; i++) start[cell(i) + 1]++;
    for (let c = 0; c < g * g; c++) start[c + 1] += start[c];
    const fill = start.slice(0, g * g);
    const items = new Int32Array(n);
    for (let i = 0; i < n; i++) items[fill[cell(i)]++] = i;
    grid = { g, x0, y0, cw, ch, start, items };
  }

  function nearestPoint(sx, sy, radiusPx) {
    if (!grid || !n) return -1;
    const [wx, wy] = toWorld(sx, sy);
    const r = radiusPx / unit();
    const { g, x0, y0, cw, ch, start, items } = grid;
    const clamp = (v) => Math.max(0, Math.min(g - 1, v));
    const ax = clamp(Math.floor((wx - r - x0) / cw)), bx = clamp(Math.floor((wx + r - x0) / cw));
    const ay = clamp(Math.floor((wy - r - y0) / ch)), by = clamp(Math.floor((wy + r - y0) / ch));
    let best = -1, bestD = r * r;
    for (let cx = ax; cx <= bx; cx++) {
      for (let cy = ay; cy <= by; cy++) {
        const c = cx * g + cy;
        for (let k = start[c]; k < start[c + 1]; k++) {
          const i = items[k];
          const d = (xs[i] - wx) ** 2 + (ys[i] - wy) ** 2;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  // -- selection -----------------------------------------------------------------------------------

  function selectPolygon(screenPath) {
    const poly = screenPath.map(([sx, sy]) => toWorld(sx, sy));
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const [x, y] of poly) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    selected = new Uint8Array(n);
    selectedCount = 0;
    for (let i = 0; i < n; i++) {
      const x = xs[i], y = ys[i];
      if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      let inside = false; // even-odd rule: count the polygon's edges a ray to the right crosses
      for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
        const [ax, ay] = poly[a], [bx, by] = poly[b];
        if ((ay > y) !== (by > y) && x < ((bx - ax) * (y - ay)) / (by - ay) + ax) inside = !inside;
      }
      if (inside) { selected[i] = 1; selectedCount++; }
    }
    rebuild();
    showStrip();
  }

  function clearSelection() {
    selected = new Uint8Array(n);
    selectedCount = 0;
    rebuild();
    showStrip();
  }

  function selectedIds() {
    const out = [];
    for (let i = 0; i < n; i++) if (selected[i]) out.push(data.points.id[i]);
    return out;
  }

  const STRIP_MAX = 200;
  function showStrip() {
    $("map-strip").hidden = selectedCount === 0;
    $("map-selected").textContent = `${selectedCount} selected`;
    const ids = selectedIds();
    const thumbs = ids.slice(0, STRIP_MAX).map((id) => {
      const i = indexOf.get(id);
      const label = data.points.label[i];
      return LK.el("li", { dataset: { id } },
        LK.el("a", { href: `/images/${id}`, title: label >= 0 ? data.labels[label] : "unlabelled" },
          LK.el("img", { src: `/thumbs/${id}/small.jpg`, alt: "", loading: "lazy", width: 72, height: 72 })));
    });
    if (ids.length > STRIP_MAX) thumbs.push(LK.el("li", { class: "more muted" }, `+${ids.length - STRIP_MAX} more`));
    $("map-thumbs").replaceChildren(...thumbs);
  }

  async function labelSelected(label) {
    const ids = selectedIds();
    if (!ids.length || !label) return;
    $("map-apply").disabled = true;
    try {
      for (let i = 0; i < ids.length; i += BATCH) {
        await LK.api("POST", "/api/labels", { image_ids: ids.slice(i, i + BATCH), label });
      }
      LK.toast(`${ids.length} photos labelled “${label}”`);
      const list = document.getElementById("known-labels");
      if (list && !LK.labelOptions().includes(label)) list.append(LK.el("option", { value: label }));
      await load(); // labels and the suggestions they changed
    } catch (err) {
      LK.fail(err);
    } finally {
      $("map-apply").disabled = false;
    }
  }

  // -- hover and tooltip -----------------------------------------------------------------------------

  function showTip(i, sx, sy) {
    const tip = $("map-tip");
    if (i < 0) {
      tip.hidden = true;
      hovered = -1;
      return;
    }
    const p = data.points;
    if (i !== hovered) {
      hovered = i;
      $("map-tip-img").src = `/thumbs/${p.id[i]}/small.jpg`;
      const parts = [p.label[i] >= 0 ? data.labels[p.label[i]] : "unlabelled"];
      if (p.label[i] < 0 && p.suggested[i] >= 0) parts.push(`suggested ${data.labels[p.suggested[i]]} (${Math.round(p.confidence[i] * 100)}%)`);
      parts.push(data.folders[p.folder[i]] || "(top folder)");
      $("map-tip-text").textContent = parts.join(" · ");
    }
    const { w } = size();
    tip.style.left = `${Math.min(sx + 14, w - 180)}px`;
    tip.style.top = `${Math.max(sy - 190, 4)}px`;
    tip.hidden = false;
  }

  // -- pointer -------------------------------------------------------------------------------------

  let drag = null; // {kind: "pan"|"lasso", x, y, moved, path}

  function local(e) {
    const r = stage.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  function drawLasso(path) {
    const { w, h } = size();
    octx.clearRect(0, 0, w, h);
    if (!path || path.length < 2) return;
    octx.beginPath();
    octx.moveTo(path[0][0], path[0][1]);
    for (const [x, y] of path) octx.lineTo(x, y);
    octx.closePath();
    octx.fillStyle = "rgba(47, 93, 138, 0.12)";
    octx.fill();
    octx.strokeStyle = "#2f5d8a";
    octx.lineWidth = 1.5;
    octx.setLineDash([5, 4]);
    octx.stroke();
  }

  overlay.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || !data) return;
    overlay.setPointerCapture(e.pointerId);
    const [x, y] = local(e);
    drag = { kind: mode === "lasso" || e.shiftKey ? "lasso" : "pan", x, y, moved: 0, path: [[x, y]] };
    showTip(-1);
  });

  overlay.addEventListener("pointermove", (e) => {
    const [x, y] = local(e);
    if (!drag) {
      showTip(nearestPoint(x, y, Math.max(6, pointSize())), x, y);
      return;
    }
    const last = drag.path[drag.path.length - 1];
    const step = Math.hypot(x - last[0], y - last[1]);
    drag.moved += step;
    if (drag.kind === "pan") {
      const u = unit();
      view.cx -= (x - last[0]) / u;
      view.cy += (y - last[1]) / u;
      drag.path = [[x, y]];
      dirty = true;
    } else if (step >= 2) {
      drag.path.push([x, y]);
      drawLasso(drag.path);
    }
  });

  overlay.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const [x, y] = local(e);
    const d = drag;
    drag = null;
    if (d.kind === "lasso") {
      drawLasso(null);
      if (d.path.length >= 3 && d.moved > 6) selectPolygon(d.path);
      return;
    }
    if (d.moved < 4) {
      const i = nearestPoint(x, y, Math.max(6, pointSize()));
      if (i >= 0) window.location = `/images/${data.points.id[i]}`;
    }
  });

  overlay.addEventListener("pointerleave", () => { if (!drag) showTip(-1); });

  overlay.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [x, y] = local(e);
    const before = toWorld(x, y);
    view.zoom = Math.min(400, Math.max(0.3, view.zoom * Math.exp(-e.deltaY * 0.0015)));
    const after = toWorld(x, y);
    view.cx += before[0] - after[0];
    view.cy += before[1] - after[1];
    dirty = true;
    showTip(-1);
  }, { passive: false });

  function setMode(m) {
    mode = m;
    $("map-pan").setAttribute("aria-pressed", String(m === "pan"));
    $("map-lasso").setAttribute("aria-pressed", String(m === "lasso"));
    stage.classList.toggle("lasso", m === "lasso");
  }
  $("map-pan").addEventListener("click", () => setMode("pan"));
  $("map-lasso").addEventListener("click", () => setMode("lasso"));
  $("map-reset").addEventListener("click", () => { Object.assign(view, { cx: 0, cy: 0, zoom: 0.92 }); dirty = true; });
  $("map-colour").addEventListener("change", () => { if (data) rebuild(); });
  $("map-clear").addEventListener("click", clearSelection);
  $("map-label-form").addEventListener("submit", (e) => {
    e.preventDefault();
    labelSelected($("map-label").value.trim());
  });
  $("map-refit").addEventListener("click", async () => {
    try {
      await LK.api("POST", "/api/map/refit");
      note("Computing the layout again…");
      schedule();
    } catch (err) {
      LK.fail(err);
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !e.target.closest("input, select, textarea") && selectedCount) clearSelection();
  });
  new ResizeObserver(resize).observe(stage);

  // -- data ----------------------------------------------------------------------------------------

  let indexOf = new Map();

  function note(text) {
    $("map-note").hidden = !text;
    $("map-note").textContent = text || "";
  }

  function schedule() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(load, 1500);
  }

  async function load() {
    let payload;
    try {
      payload = await LK.api("GET", "/api/map");
    } catch (err) {
      LK.fail(err);
      return;
    }
    const keep = selectedIds();
    data = payload;
    const p = data.points;
    n = p.id.length;
    xs = Float32Array.from(p.x);
    ys = Float32Array.from(p.y);
    indexOf = new Map(p.id.map((id, i) => [id, i]));
    selected = new Uint8Array(n);
    selectedCount = 0;
    for (const id of keep) {
      const i = indexOf.get(id);
      if (i !== undefined) { selected[i] = 1; selectedCount++; }
    }
    buildGrid();
    rebuild();
    showStrip();
    const s = data.status;
    $("map-count").textContent = data.downsampled
      ? `${data.shown.toLocaleString()} of ${data.count.toLocaleString()} photos`
      : `${data.count.toLocaleString()} photos`;
    if (s.error) note(`The map could not be computed: ${s.error}`);
    else if (s.computing) note(n ? "Placing new photos on the map…" : "Computing the map of the collection… (it appears here when done)");
    else if (data.downsampled) note(`Showing a random ${data.shown.toLocaleString()} of ${data.count.toLocaleString()} photos, so that the page stays fast.`);
    else if (!n) note("No indexed photos yet: index some, then come back.");
    else note("");
    if (s.computing || s.suggesting) schedule();
    window.LKMap.ready = true;
    window.LKMap.readyAt = performance.now();
  }

  // For tests and benchmarks: where a photo is drawn, and what is selected.
  window.LKMap = {
    ready: false,
    drawnAt: 0, // when the first frame with points was drawn (ms since navigation)
    draws: 0,
    get renderer() { return renderer && renderer.kind; },
    toScreen(id) {
      const i = indexOf.get(id);
      return i === undefined ? null : toScreen(xs[i], ys[i]);
    },
    points: () => data && data.points,
    selectedIds,
    view,
  };

  try {
    renderer = webgl();
  } catch (err) {
    renderer = null;
  }
  renderer = renderer || canvas2d();
  resize();
  requestAnimationFrame(frame);
  load();
})();
