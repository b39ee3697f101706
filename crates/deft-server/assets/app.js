// deft's one script: the live log of a task page and checks as you type on the settings page.
// Everything else is plain forms, which work without it.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function liveLog() {
  const log = document.getElementById("log");
  if (!log || !window.EventSource) return;
  const task = log.dataset.task;
  const status = document.getElementById("log-status");
  const source = new EventSource("/tasks/" + encodeURIComponent(task) + "/log?after=" + log.dataset.after);
  let refreshing = null;
  const refresh = () => {
    // Several events in a burst cause one reload of the summary, not one each.
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      const response = await fetch("/tasks/" + encodeURIComponent(task) + "/summary", { credentials: "same-origin" });
      if (!response.ok) return;
      const summary = document.getElementById("summary");
      const focused = document.activeElement && summary.contains(document.activeElement) && document.activeElement.value;
      if (focused) return; // never wipe what the person is typing
      summary.innerHTML = await response.text();
    }, 150);
  };
  source.addEventListener("entry", (message) => {
    const holder = document.createElement("template");
    holder.innerHTML = message.data.trim();
    const entry = holder.content.firstElementChild;
    if (!entry || document.getElementById(entry.id)) return;
    log.appendChild(entry);
    if (status) status.textContent = "Live: " + log.children.length + " event(s).";
    if (entry.dataset.refresh) refresh();
  });
  source.addEventListener("error", () => {
    if (status) status.textContent = "Connection lost; reconnecting…";
  });
}

function checkAsYouType() {
  for (const field of document.querySelectorAll("[data-check]")) {
    const message = document.getElementById(field.getAttribute("aria-describedby"));
    let timer = null;
    const check = async () => {
      const body = new URLSearchParams({ csrf: csrfToken(), field: field.dataset.check, value: field.value });
      const level = document.getElementById("level");
      if (level) body.set("level", level.value);
      const response = await fetch("/settings/check", { method: "POST", body, credentials: "same-origin" });
      if (!response.ok) return;
      const result = await response.json();
      field.setAttribute("aria-invalid", result.ok ? "false" : "true");
      if (message) {
        message.textContent = result.ok ? "" : result.message;
        message.hidden = result.ok;
      }
    };
    field.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(check, 250);
    });
  }
}

// A form that waits on the model (a chat message) says so, and cannot be sent twice.
function busyForms() {
  for (const form of document.querySelectorAll("form[data-busy]")) {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      if (!button) return;
      button.textContent = form.dataset.busy;
      button.setAttribute("aria-busy", "true");
      setTimeout(() => { button.disabled = true; }, 0);
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  liveLog();
  checkAsYouType();
  busyForms();
});
