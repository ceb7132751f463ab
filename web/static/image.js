// The photo page: neighbours, the label suggestion and its voters, setting and clearing the label.
"use strict";

(function () {
  const root = document.getElementById("photo");
  if (!root) return;
  const id = root.dataset.id;
  const searchable = root.dataset.searchable === "yes";
  const box = document.getElementById("suggestion");
  const form = document.getElementById("label-form");
  const input = document.getElementById("label-input");
  const clear = document.getElementById("clear-label");
  let current = null; // the image payload after the last change
  let suggested = null;

  function showLabel(image) {
    current = image;
    const chip = document.getElementById("label-chip");
    chip.replaceChildren(LK.labelChip(image.label));
    document.getElementById("label-source").textContent = image.label ? image.label.source : "";
    clear.hidden = !image.label;
    input.value = image.label ? image.label.label : "";
  }

  function renderSuggestion(s) {
    suggested = s;
    box.replaceChildren();
    if (!s) {
      box.hidden = true;
      return;
    }
    const agrees = current && current.label && current.label.label === s.label;
    const voters = s.evidence.filter((e) => e.label !== null);
    const accept = LK.el("button", { type: "button", class: "good", id: "accept", title: "Accept (A)" }, "Accept");
    accept.addEventListener("click", () => save(s.label, "accepted"));
    box.append(
      LK.el("div", { class: "what" },
        LK.el("span", {}, agrees ? "Neighbours agree:" : "Suggested:"),
        LK.el("span", { class: "chip suggested", id: "suggested-label" }, s.label),
        LK.el("span", { class: "muted small" }, `${Math.round(s.confidence * 100)}% confidence`),
        agrees ? null : accept),
      LK.el("meter", { min: 0, max: 1, value: s.confidence, title: `confidence ${s.confidence}` }),
      LK.el("div", { class: "muted small" }, `Voted by the ${voters.length} labelled photos among its ${s.evidence.length} nearest neighbours:`),
      LK.el("div", { class: "voters" }, voters.map((e) =>
        LK.el("a", { class: "voter", href: e.page_url || "#", title: `${e.path || e.image_id}: ${e.label}, ${e.score.toFixed(3)}` },
          e.thumb_url ? LK.el("img", { src: e.thumb_url, alt: "", loading: "lazy" }) : null,
          LK.el("span", { class: "chip" + (e.label === s.label ? "" : " none") }, e.label),
          LK.el("div", {}, e.score.toFixed(3))))));
    box.hidden = false;
  }

  async function loadSuggestion() {
    try {
      const data = await LK.api("GET", `/api/images/${id}/suggestion`);
      renderSuggestion(data.suggestion);
    } catch (err) {
      LK.fail(err);
    }
  }

  async function loadNeighbours() {
    const grid = document.getElementById("neighbours");
    if (!grid) return;
    try {
      const data = await LK.api("GET", `/api/images/${id}/neighbours?k=${root.dataset.k}`);
      grid.replaceChildren(...data.results.map((r) => LK.tile(r.image, { score: r.score })));
      if (!data.results.length) grid.append(LK.el("li", { class: "muted" }, "No other photos yet."));
    } catch (err) {
      grid.replaceChildren(LK.el("li", { class: "muted" }, err.message));
    }
    grid.removeAttribute("aria-busy");
  }

  async function save(label, source) {
    try {
      const image = await LK.api("PUT", `/api/images/${id}/label`, { label, source });
      showLabel(image);
      LK.toast(`Labelled “${image.label.label}”`);
      loadSuggestion();
    } catch (err) {
      LK.fail(err);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const label = input.value.trim();
    if (label) save(label, suggested && suggested.label === label ? "accepted" : "user");
  });

  clear.addEventListener("click", async () => {
    try {
      showLabel(await LK.api("DELETE", `/api/images/${id}/label`));
      LK.toast("Label cleared");
      loadSuggestion();
    } catch (err) {
      LK.fail(err);
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const accept = document.getElementById("accept"); // shown only where the label is not the suggestion
    if (event.key === "a" && accept) {
      event.preventDefault();
      accept.click();
    } else if (event.key === "l") {
      event.preventDefault();
      input.focus();
    }
  });

  current = { label: input.value ? { label: input.value } : null };
  loadSuggestion();
  if (searchable) loadNeighbours();
})();
