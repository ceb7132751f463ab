// Check labels: keep a label (remembered) or change it to the suggested one; the row then goes,
// and the summary's counts follow, as a reload would show them.
"use strict";

(() => {
  const list = document.getElementById("check-list");
  if (!list) return;
  const found = document.getElementById("check-found");
  const kept = document.getElementById("check-kept");

  // One fewer listed; and when a label was kept, the keep API's count of kept labels: a photo kept
  // before, under a label it has since lost, is one entry there, not two, so counting one more here
  // could be wrong.
  function recount(keptCount) {
    const n = Math.max(0, Number(found.textContent) - 1);
    found.textContent = String(n);
    document.getElementById("check-found-verb").textContent = n === 1 ? "disagrees" : "disagree";
    if (keptCount !== undefined) {
      kept.textContent = String(keptCount);
      document.getElementById("check-kept-note").hidden = keptCount === 0;
    }
  }

  async function act(item, keep) {
    const outcome = item.querySelector(".outcome");
    const id = item.dataset.id;
    try {
      if (keep) recount((await LK.api("POST", `/api/labels/suspicious/${id}/keep`)).kept_count);
      else {
        await LK.api("PUT", `/api/images/${id}/label`, { label: item.dataset.suggested, source: "user" });
        recount();
      }
      item.remove();
      if (!list.querySelector(".check-item")) {  // the last one listed: what a reload shows
        if (Number(found.textContent) > 0) location.reload();  // more than the page listed: the next ones
        else list.replaceWith(LK.el("div", { class: "empty panel", id: "check-empty" }, "No label looks wrong."));
      }
    } catch (e) {
      outcome.textContent = e.message;
    }
  }

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const item = button.closest(".check-item");
    if (button.classList.contains("keep")) act(item, true);
    else if (button.classList.contains("correct")) act(item, false);
  });
})();
