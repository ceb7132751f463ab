// About page: start a tune (or revert) in the background and follow it through /api/status.
"use strict";

(() => {
  const progress = document.getElementById("tune-progress");
  const start = document.getElementById("tune-start");
  const revert = document.getElementById("tune-revert");
  if (!progress) return;
  const POLL_MS = 1500;

  function describe(t) {
    if (t.state === "running") {
      const part = t.total ? ` ${t.done} / ${t.total}` : "";
      return `${t.action === "revert" ? "Reverting" : "Tuning"}: ${t.phase}${part}…`;
    }
    if (t.state === "failed") return `The ${t.action} failed: ${t.error}`;
    const r = t.report || {};
    if (t.action === "revert") return `Reverted: ${r.reembedded} photos re-embedded. Reload the page to see it.`;
    const pct = (x) => (x === null || x === undefined ? "?" : `${(100 * x).toFixed(1)}%`);
    // The keep rule reads the labels' mean log-likelihood (search/tune_decision.py): shown as the
    // change of their mean likelihood, as the About page does.
    const likely = (g) => {
      if (g === null || g === undefined) return "";
      const change = Math.round(100 * Math.expm1(g));
      return `, the right labels' likelihood ${change >= 0 ? "+" : ""}${change}%`;
    };
    const figures = `held-out accuracy ${pct(r.frozen_accuracy)} → ${pct(r.tuned_accuracy)}${likely(r.loglik_gain)}`;
    return r.kept ? `Tuned and kept: ${figures}; ${r.reembedded} photos re-embedded. Reload the page to see it.`
                  : `Tuned, not kept: ${figures} (the current representation was as good).`;
  }

  function show(t) {
    progress.textContent = describe(t);
    progress.dataset.state = t.state;
    const running = t.state === "running";
    if (start) start.disabled = running;
    if (revert) revert.disabled = running;
    if (running) setTimeout(poll, POLL_MS);
  }

  async function poll() {
    try {
      const status = await LK.api("GET", "/api/status");
      if (status.tuning) show(status.tuning);
    } catch (e) {
      progress.textContent = `Could not read the progress: ${e.message}`;
      setTimeout(poll, POLL_MS * 4);
    }
  }

  async function begin(url) {
    try {
      const answer = await LK.api("POST", url);
      show(answer.tuning);
    } catch (e) {
      progress.textContent = e.message;
      progress.dataset.state = "refused";
    }
  }

  if (start) start.addEventListener("click", () => begin("/api/tune"));
  if (revert) revert.addEventListener("click", () => begin("/api/tune/revert"));
  poll();  // a tune started before this page was opened
})();
