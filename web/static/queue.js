// The labelling queue: most uncertain first; keys accept, pick or skip; each label refreshes the queue.
"use strict";

(function () {
  if (!document.getElementById("queue")) return;
  const $ = (id) => document.getElementById(id);
  const skipped = new Set();
  let items = [];
  let labels = [];
  let item = null;
  let choices = [];
  let done = 0;
  let busy = false;

  let poll = null;

  async function load(keep = false) {
    const limit = Math.min(200, 20 + skipped.size);
    try {
      const data = await LK.api("GET", `/api/queue?limit=${limit}`);
      labels = data.labels;
      const current = keep && item ? item.image.id : null;
      items = data.items.filter((it) => !skipped.has(it.image.id));
      // A refresh after retraining keeps the photo on screen, with its new suggestion.
      const at = items.findIndex((it) => it.image.id === current);
      if (at > 0) items.unshift(items.splice(at, 1)[0]);
      $("left").textContent = data.unlabelled;
      learning(data.learning);
      show();
    } catch (err) {
      LK.fail(err);
    }
  }

  function learning(state) {
    // The server retrains in the background after a label; poll until its suggestions are current.
    clearTimeout(poll);
    const box = $("q-learning");
    if (!state || !state.current) {
      box.textContent = "Learning from your labels…";
      box.dataset.state = "training";
      poll = setTimeout(() => {
        if (busy || document.activeElement === $("q-input")) learning(state); // try again later
        else load(true);
      }, 1000);
      return;
    }
    const acc = state.accuracy[state.method];
    box.dataset.state = "current";
    box.textContent = `Suggestions from ${state.method}, trained on ${state.trained_on} labels` +
      (acc === undefined ? "" : ` (${Math.round(acc * 100)}% right in cross-validation)`);
  }

  function candidates(s) {
    // The suggestion, then the other labels its voters gave (by total similarity), then the rest.
    const weight = new Map();
    if (s) for (const e of s.evidence) if (e.label !== null) weight.set(e.label, (weight.get(e.label) || 0) + e.score);
    const ordered = s ? [s.label] : [];
    for (const [label] of [...weight.entries()].sort((a, b) => b[1] - a[1])) if (!ordered.includes(label)) ordered.push(label);
    for (const label of labels) if (!ordered.includes(label)) ordered.push(label);
    return ordered.slice(0, 9);
  }

  function show() {
    item = items[0] || null;
    $("current").hidden = !item;
    $("q-empty").hidden = !!item;
    if (!item) return;
    const { image, suggestion: s } = item;
    $("q-img").src = image.large_url;
    $("q-img").alt = image.name;
    $("q-path").replaceChildren(LK.el("a", { href: image.page_url }, image.path));

    const box = $("q-suggestion");
    if (s) {
      box.replaceChildren(
        LK.el("div", { class: "suggestion" },
          LK.el("div", { class: "what" }, "Suggested:", LK.el("span", { class: "chip suggested", id: "q-suggested" }, s.label),
            LK.el("span", { class: "muted small" }, `${Math.round(s.confidence * 100)}% confidence · margin ${s.margin.toFixed(2)}`)),
          LK.el("meter", { min: 0, max: 1, value: s.confidence }),
          LK.el("button", { type: "button", class: "good", id: "q-accept", onclick: () => save(s.label, "accepted") },
            LK.el("kbd", {}, "Enter"), " Accept")));
    } else {
      box.replaceChildren(LK.el("p", { class: "muted" }, "No suggestion yet: label a few photos and their neighbours will get one."));
    }

    choices = candidates(s);
    $("q-choices").replaceChildren(...choices.map((label, i) =>
      LK.el("button", { type: "button", class: s && label === s.label ? "suggested" : "", onclick: () => save(label, s && label === s.label ? "accepted" : "user") },
        LK.el("kbd", {}, String(i + 1)), " ", label)));

    $("q-voters").replaceChildren(...(s ? s.evidence.filter((e) => e.label !== null) : []).map((e) =>
      LK.el("a", { class: "voter", href: e.page_url || "#", title: `${e.path || e.image_id}: ${e.label}, ${e.score.toFixed(3)}` },
        e.thumb_url ? LK.el("img", { src: e.thumb_url, alt: "", loading: "lazy" }) : null,
        LK.el("span", { class: "chip" + (s && e.label === s.label ? "" : " none") }, e.label),
        LK.el("div", {}, e.score.toFixed(3)))));
    if (!s) $("q-voters").append(LK.el("span", { class: "muted small" }, "No labelled neighbours yet."));

    $("q-next").replaceChildren(...items.slice(1, 9).map((it) =>
      LK.el("img", { src: it.image.thumb_url, alt: it.image.name, title: it.image.path })));
    $("q-input").value = "";
  }

  async function save(label, source) {
    if (!item || busy) return;
    busy = true;
    try {
      await LK.api("PUT", `/api/images/${item.image.id}/label`, { label, source });
      done += 1;
      $("done").textContent = done;
      if (!labels.includes(label)) labels.push(label);
      LK.toast(`${item.image.name}: “${label}”`);
      await load(); // suggestions of the neighbours changed
    } catch (err) {
      LK.fail(err);
    } finally {
      busy = false;
    }
  }

  function skip() {
    if (!item) return;
    skipped.add(item.image.id);
    items.shift();
    if (items.length < 3) load();
    else show();
  }

  $("q-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const label = $("q-input").value.trim();
    if (label) save(label, item && item.suggestion && item.suggestion.label === label ? "accepted" : "user");
    $("q-input").blur();
  });
  $("q-skip").addEventListener("click", skip);

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest("input, select, textarea")) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.target.closest("button, a") && (e.key === "Enter" || e.key === " ")) return; // let them click
    if (e.key === "Enter" && item && item.suggestion) {
      e.preventDefault();
      save(item.suggestion.label, "accepted");
    } else if (/^[1-9]$/.test(e.key) && choices[Number(e.key) - 1]) {
      e.preventDefault();
      const label = choices[Number(e.key) - 1];
      save(label, item.suggestion && item.suggestion.label === label ? "accepted" : "user");
    } else if (e.key === "s" || e.key === "ArrowRight") {
      e.preventDefault();
      skip();
    } else if (e.key === "l" || e.key === "/") {
      e.preventDefault();
      $("q-input").focus();
    } else if (e.key === "o" && item) {
      window.location = item.image.page_url;
    }
  });

  load();
})();
