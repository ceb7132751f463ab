// Search by upload (drop, pick or paste) or "more like this"; label several results at once.
"use strict";

(function () {
  const root = document.getElementById("search");
  if (!root) return;
  const drop = document.getElementById("drop");
  const file = document.getElementById("file");
  const grid = document.getElementById("results");
  const batch = document.getElementById("batch");
  const status = document.getElementById("query-status");
  const K = 48;
  const maxBytes = parseFloat(root.dataset.maxMb) * 1024 * 1024;
  let previewUrl = null;

  function render(results) {
    grid.replaceChildren(...results.map((r, i) => LK.tile(r.image, { score: r.score, selectable: true, first: i === 0 })));
    if (!results.length) grid.append(LK.el("li", { class: "muted" }, "Nothing to compare with yet."));
    batch.hidden = !results.length || !LK.writable();
    updateCount();
  }

  function selected() {
    return Array.from(grid.querySelectorAll(".tile")).filter((t) => t.querySelector(".pick").checked);
  }

  function updateCount() {
    const n = selected().length;
    document.getElementById("selected-count").textContent = `${n} selected`;
    document.getElementById("batch-apply").disabled = n === 0;
  }

  async function searchFile(blob) {
    if (!blob) return;
    if (blob.size > maxBytes) {
      LK.toast(`That file is larger than ${root.dataset.maxMb} MB.`, "error");
      return;
    }
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(blob);
    document.getElementById("query").hidden = false;
    document.getElementById("query-img").src = previewUrl;
    document.getElementById("query-what").textContent = blob.name || "pasted image";
    status.textContent = "Searching…";
    grid.setAttribute("aria-busy", "true");
    const body = new FormData();
    body.append("image", blob, blob.name || "pasted.png");
    const started = performance.now();
    try {
      const data = await LK.api("POST", `/api/search?k=${K}`, body);
      status.textContent = `${data.query.width} × ${data.query.height} ${data.query.format || ""} · ${data.results.length} results in ${Math.round(performance.now() - started)} ms`;
      render(data.results);
    } catch (err) {
      status.textContent = err.message;
      grid.replaceChildren();
      batch.hidden = true;
      LK.fail(err);
    }
    grid.removeAttribute("aria-busy");
  }

  async function searchLike(id) {
    status.textContent = "Searching…";
    try {
      const data = await LK.api("GET", `/api/images/${id}/neighbours?k=${K}`);
      status.textContent = `${data.results.length} most similar photos`;
      render(data.results);
    } catch (err) {
      status.textContent = err.message;
      LK.fail(err);
    }
  }

  file.addEventListener("change", () => searchFile(file.files[0]));
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      file.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    searchFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    if (e.target.closest("input")) return;
    const item = Array.from(e.clipboardData.items).find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) {
      e.preventDefault();
      searchFile(item.getAsFile());
    }
  });

  grid.addEventListener("change", updateCount);
  document.getElementById("select-all").addEventListener("click", () => {
    grid.querySelectorAll(".tile").forEach((t) => { t.querySelector(".pick").checked = true; t.classList.add("selected"); });
    updateCount();
  });
  document.getElementById("select-none").addEventListener("click", () => {
    grid.querySelectorAll(".tile").forEach((t) => { t.querySelector(".pick").checked = false; t.classList.remove("selected"); });
    updateCount();
  });
  batch.addEventListener("submit", async (e) => {
    e.preventDefault();
    const label = document.getElementById("batch-label").value.trim();
    const tiles = selected();
    if (!label || !tiles.length) return;
    try {
      const data = await LK.api("POST", "/api/labels", { image_ids: tiles.map((t) => Number(t.dataset.id)), label });
      for (const t of tiles) {
        t.querySelector(".chip").replaceWith(LK.labelChip({ label: data.label, source: "user" }));
        t.querySelector(".pick").checked = false;
        t.classList.remove("selected");
      }
      updateCount();
      LK.toast(`Labelled ${data.labelled} photo${data.labelled === 1 ? "" : "s"} “${data.label}”`);
    } catch (err) {
      LK.fail(err);
    }
  });

  if (root.dataset.like) searchLike(root.dataset.like);
})();
