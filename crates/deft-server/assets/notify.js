// Browser notifications, apart from app.js: the settings' button asks the browser for
// permission (a person's click, as browsers require), and the task list, which follows its
// tasks live, shows a notification when a task newly asks, waits for plan approval, fails or
// completes. The choice is kept in this browser only (localStorage): it is the browser's
// permission, not an account setting. Without this script nothing is shown, and the settings
// say so.
"use strict";

(function () {
  const KEY = "deft-browser-notifications";
  const supported = () => typeof window.Notification === "function";
  const wanted = () => {
    try { return window.localStorage.getItem(KEY) === "on"; } catch (e) { return false; }
  };
  const remember = (on) => {
    try {
      if (on) window.localStorage.setItem(KEY, "on");
      else window.localStorage.removeItem(KEY);
    } catch (e) { /* storage refused: the choice lasts for this page only */ }
  };

  // Settings: the button and what it says.
  function settings() {
    const button = document.getElementById("browser-notify");
    const status = document.getElementById("browser-notify-status");
    if (!button || !status) return;
    const draw = () => {
      if (!supported()) {
        status.textContent = "This browser cannot show notifications.";
        button.hidden = true;
        return;
      }
      const permission = window.Notification.permission;
      const on = wanted() && permission === "granted";
      button.hidden = false;
      button.textContent = on ? "Turn off browser notifications" : "Turn on browser notifications";
      button.setAttribute("aria-pressed", on ? "true" : "false");
      if (permission === "denied") {
        status.textContent = "This browser blocks notifications from deft: allow them in the site's settings (the icon beside the address), then come back.";
      } else if (on) {
        status.textContent = "On in this browser: while a task list is open, you are told when a task asks, waits for plan approval, fails or completes.";
      } else {
        status.textContent = "Off in this browser.";
      }
    };
    button.addEventListener("click", () => {
      if (!supported()) return;
      if (wanted() && window.Notification.permission === "granted") {
        remember(false);
        draw();
        return;
      }
      Promise.resolve(window.Notification.requestPermission()).then((permission) => {
        remember(permission === "granted");
        draw();
      });
    });
    draw();
  }

  // The task list: compare each drawing of the rows with the last, and tell of the tasks that
  // came to need the person or completed since. What was there when the page opened is not
  // told again.
  function taskList() {
    const holder = document.getElementById("task-rows");
    if (!holder || !holder.dataset.live) return;
    const told = ["needs_attention", "completed"];
    const states = () => {
      const seen = new Map();
      holder.querySelectorAll("li.task").forEach((row) => {
        const state = told.find((name) => row.classList.contains(name)) || "other";
        seen.set(row.id, { state: state, row: row });
      });
      return seen;
    };
    let last = states();
    new MutationObserver(() => {
      const now = states();
      if (wanted() && supported() && window.Notification.permission === "granted") {
        now.forEach((entry, id) => {
          const before = last.get(id);
          if (entry.state === "other" || (before && before.state === entry.state)) return;
          show(id, entry.row, entry.state);
        });
      }
      last = now;
    }).observe(holder, { childList: true, subtree: true });
  }

  function show(id, row, state) {
    const link = row.querySelector("a.title");
    const reason = row.querySelector(".reason");
    const title = link ? link.textContent.trim() : "A task";
    const body = state === "completed" ? "Completed." : (reason ? reason.textContent.trim() : "Needs you.");
    try {
      // Text only: a notification draws no markup, so a title cannot inject any.
      const note = new window.Notification("deft: " + title, { body: body, tag: id + ":" + state });
      note.onclick = () => {
        window.focus();
        if (link) window.location.href = link.getAttribute("href");
      };
    } catch (e) { /* a browser that allows notifications only from a service worker */ }
  }

  const start = () => { settings(); taskList(); };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
