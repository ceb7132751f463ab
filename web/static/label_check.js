// Check labels: keep a label (remembered) or change it to the suggested one; the row then goes.
"use strict";

(() => {
  const list = document.getElementById("check-list");
  if (!list) return;

  async function act(item, keep) {
    const outcome = item.querySelector(".outcome");
    const id = item.dataset.id;
    try {
      if (keep) await LK.api("POST", `/api/labels/suspicious/${id}/keep`);
      else await LK.api("PUT", `/api/images/${id}/label`, { label: item.dataset.suggested, source: "user" });
      item.remove();
      if (!list.querySelector(".check-item")) {  // the last one: say so, as a reload would
        list.replaceWith(LK.el("div", { class: "empty panel", id: "check-empty" }, "No label looks wrong."));
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
