// Duplicates page: per-photo keep/remove choices and "not duplicates" dismissals, through the JSON API.
"use strict";

document.addEventListener("change", async (event) => {
  const input = event.target;
  if (!input.matches(".choice input[type=radio]")) return;
  const tile = input.closest(".tile");
  try {
    await LK.api("PUT", `/api/duplicates/choices/${tile.dataset.id}`, { choice: input.value });
    tile.classList.toggle("first", input.value === "keep");
    tile.dataset.saved = input.value;
  } catch (err) {
    LK.toast(`Could not save the choice: ${err.message}`, "error");
  }
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest(".dismiss");
  if (!button) return;
  const group = button.closest(".group");
  const ids = group.dataset.ids.split(",").map(Number);
  button.disabled = true;
  try {
    await LK.api("POST", "/api/duplicates/dismiss", { image_ids: ids, kind: group.dataset.kind });
    group.remove();
    LK.toast("Marked as not duplicates: this group will not come back.");
  } catch (err) {
    button.disabled = false;
    LK.toast(`Could not dismiss the group: ${err.message}`, "error");
  }
});
