// Live updates and actions for Podium's dashboard. No framework: the server renders every part, this
// script only fetches the live part again when /events says the engine changed, and posts actions.
"use strict";
(() => {
  const live = document.getElementById("live");
  const dot = document.getElementById("live-dot");
  let busy = false;
  let again = false;
  let first = true;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const answer = await fetch(location.href, { headers: { "x-podium-fragment": "live" } });
      if (answer.ok && !live.contains(document.activeElement)) {
        live.innerHTML = await answer.text();
      } else if (answer.ok) {
        again = true;  // someone is typing in the live part: try again after they leave it
      }
    } finally {
      busy = false;
      if (again) { again = false; setTimeout(refresh, 300); }
    }
  }

  if (live && window.EventSource) {
    const source = new EventSource("/events");
    source.addEventListener("open", () => dot && dot.classList.add("on"));
    source.addEventListener("error", () => dot && dot.classList.remove("on"));
    source.addEventListener("changed", () => {
      if (first) { first = false; return; }  // the page was rendered from this very state
      refresh();
    });
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("form.act button");
    if (!button) return;
    const form = button.closest("form.act");
    const output = form.querySelector("output");
    const body = Object.assign({}, form.dataset);
    delete body.url;
    if (button.dataset.action) {
      body.action = button.dataset.action;
      body.note = (form.querySelector("input[name=note]") || {}).value || null;
    }
    if (button.dataset.decision) {
      body.decision = button.dataset.decision;
      body.comment = (form.querySelector("input[name=comment]") || {}).value || null;
    }
    output.classList.remove("bad");
    output.textContent = "sending…";
    const answer = await fetch(form.dataset.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const reply = await answer.json().catch(() => ({}));
    output.textContent = answer.ok ? "sent" : (reply.message || `refused (${answer.status})`);
    if (!answer.ok) output.classList.add("bad");
    if (document.activeElement) document.activeElement.blur();
  });
})();
