// lookalike: shared helpers for the pages. No build step, no framework; text goes in as textContent.
"use strict";

const LK = {
  writable: () => document.body.dataset.writable === "yes",

  // Calls the JSON API; resolves to the parsed body, or throws Error(message) from the error shape.
  async api(method, url, body) {
    const options = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body instanceof FormData || body instanceof Blob) {
      options.body = body;
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : `${response.status} ${response.statusText}`;
      const err = new Error(message);
      err.status = response.status;
      throw err;
    }
    return data;
  },

  // el("a", {href: "/x", class: "y"}, "text", child): attributes by setAttribute, strings as text nodes.
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },

  toast(message, kind) {
    const box = document.getElementById("toast");
    const msg = LK.el("div", { class: "msg" + (kind === "error" ? " error" : "") }, message);
    box.append(msg);
    setTimeout(() => msg.remove(), kind === "error" ? 7000 : 2500);
  },

  // Reports an API failure; a 401 offers the unlock page.
  fail(err) {
    if (err.status === 401) {
      LK.toast("Changes need the server's token: unlock first.", "error");
      setTimeout(() => { window.location = document.body.dataset.unlockUrl + "?next=" + encodeURIComponent(location.pathname + location.search); }, 1200);
    } else {
      LK.toast(err.message || String(err), "error");
    }
  },

  score(value) {
    return LK.el("span", { class: "score" + (value >= 0.9 ? " high" : ""), title: "cosine similarity" }, value.toFixed(3));
  },

  labelChip(label) {
    if (!label) return LK.el("span", { class: "chip none" }, "unlabelled");
    return LK.el("span", { class: "chip", title: `${label.label} (${label.source})` }, label.label);
  },

  // A grid tile for an image payload, optionally with a score and a selection checkbox.
  tile(image, { score, selectable, first } = {}) {
    const pic = image.thumb_url
      ? LK.el("img", { src: image.thumb_url, alt: image.name, loading: "lazy", width: 168, height: 168 })
      : LK.el("div", { class: "broken" }, LK.el("span", { class: "glyph" }, "⚠"), image.error || "cannot be shown");
    const li = LK.el("li", { class: "tile" + (first ? " first" : ""), dataset: { id: image.id } },
      LK.el("a", { class: "pic", href: image.page_url, title: image.path }, pic),
      LK.el("div", { class: "cap" },
        LK.el("div", { class: "row" }, LK.labelChip(image.label), score === undefined ? null : LK.score(score)),
        LK.el("span", { class: "name", title: image.path }, image.name)));
    if (selectable) {
      const box = LK.el("input", { type: "checkbox", class: "pick", "aria-label": `select ${image.name}` });
      box.addEventListener("change", () => li.classList.toggle("selected", box.checked));
      li.prepend(box);
    }
    return li;
  },

  labelOptions() {
    const list = document.getElementById("known-labels");
    return list ? Array.from(list.options).map((o) => o.value) : [];
  },
};

window.LK = LK;

// `serve --watch`: a banner says while new photos are being indexed, with progress.
(function watchBanner() {
  const banner = document.getElementById("watch-banner");
  if (!banner) return;
  async function poll() {
    try {
      const watch = (await LK.api("GET", banner.dataset.statusUrl)).watch;
      const busy = watch && (watch.state !== "idle" || watch.waiting > 0);
      banner.hidden = !busy;
      if (busy) {
        const counted = watch.total ? `: ${watch.done} of ${watch.total}` : "";
        const waiting = watch.waiting ? ` (${watch.waiting} still being written)` : "";
        banner.textContent = `Indexing new photos${counted}${waiting}`;
      }
    } catch (e) {
      banner.hidden = true;
    }
    setTimeout(poll, banner.hidden ? 5000 : 1500);
  }
  poll();
})();
