// deft's one script: the live log of a task page, a chat's reply as it is written, and checks
// as you type on the settings page.
// Everything else is plain forms, which work without it.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// The task page's log follows the task: /tasks/ID/log sends what each new event changed, a
// step's heading (`group`) or a card (`card`), each drawn by the server. A new card lands in
// its step; a card that is there already (a call whose result came, a question answered)
// takes its place. Follow keeps the newest card in view until the person scrolls up. The
// stream is closed when the page is left (a page kept for Back would hold one of the few
// connections a browser opens to a server) and opened again, from where it was, on return.
function liveLog() {
  const log = document.getElementById("log");
  if (!log || log.dataset.after === undefined || !window.EventSource) return;
  const task = log.dataset.task;
  const status = document.getElementById("log-status");
  const follow = document.getElementById("follow");
  let after = log.dataset.after;
  let source = null;
  let following = false;
  // The newest step's last card, or its heading while it has none.
  const showNewest = () => {
    const groups = log.querySelectorAll("details.group");
    const group = groups[groups.length - 1];
    if (!group) return;
    group.open = true;
    const cards = group.querySelectorAll(".entry");
    (cards[cards.length - 1] || group).scrollIntoView({ block: "end" });
  };
  const setFollow = (on) => {
    following = on;
    if (follow) follow.setAttribute("aria-pressed", on ? "true" : "false");
    if (on) showNewest();
  };
  if (follow) {
    follow.hidden = false;
    follow.addEventListener("click", () => setFollow(!following));
    // The person scrolling up turns Follow off. Scroll events alone cannot tell: the page
    // also moves when the summary above the log is drawn again.
    const up = () => { if (following) setFollow(false); };
    window.addEventListener("wheel", (event) => { if (event.deltaY < 0) up(); }, { passive: true });
    let touchY = null;
    window.addEventListener("touchstart", (event) => { touchY = event.touches[0].clientY; }, { passive: true });
    window.addEventListener("touchmove", (event) => { if (touchY !== null && event.touches[0].clientY > touchY + 10) up(); }, { passive: true });
    window.addEventListener("keydown", (event) => {
      const typing = event.target.closest && event.target.closest("input, textarea, select");
      if (!typing && ["ArrowUp", "PageUp", "Home"].includes(event.key)) up();
    });
  }
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
      drawTimes(summary);
      // The summary grew or shrank above the log: the newest card may have moved.
      if (following) showNewest();
    }, 150);
  };
  const parse = (html) => {
    const holder = document.createElement("template");
    holder.innerHTML = html.trim();
    return holder.content.firstElementChild;
  };
  const placeGroup = (html) => {
    const group = parse(html);
    if (!group) return;
    const old = document.getElementById(group.id);
    if (!old) {
      log.appendChild(group);
      return;
    }
    old.replaceChild(group.querySelector("summary"), old.querySelector("summary"));
    // A step that finishes folds, and the one that starts opens; one the person opened or
    // closed otherwise stays as they left it.
    if (old.dataset.status !== group.dataset.status) old.open = group.open;
    old.className = group.className;
    old.dataset.status = group.dataset.status;
  };
  const placeCard = (html) => {
    const card = parse(html);
    if (!card) return;
    const old = document.getElementById(card.id);
    if (old) {
      const opened = [...old.querySelectorAll("details")].map((d) => d.open);
      card.querySelectorAll("details").forEach((d, i) => { if (opened[i]) d.open = true; });
      old.replaceWith(card);
    } else {
      const groups = log.querySelectorAll("details.group");
      const group = document.getElementById(card.dataset.group) || groups[groups.length - 1];
      const list = group && group.querySelector("ol.cards");
      if (!list) return;
      list.appendChild(card);
    }
    drawTimes(card);
    if (status) status.textContent = "Live: " + log.querySelectorAll(".entry").length + " card(s) in " + log.querySelectorAll("details.group").length + " step(s).";
    if (card.dataset.refresh) refresh();
    if (following) showNewest();
  };
  const open = () => {
    source = new EventSource("/tasks/" + encodeURIComponent(task) + "/log?after=" + encodeURIComponent(after));
    log.dataset.stream = "open";
    const seen = (message) => { if (message.lastEventId) after = message.lastEventId; };
    source.addEventListener("group", (message) => { placeGroup(message.data); seen(message); });
    source.addEventListener("card", (message) => { placeCard(message.data); seen(message); });
    source.addEventListener("error", () => {
      if (status) status.textContent = "Connection lost; reconnecting…";
    });
  };
  window.addEventListener("pagehide", () => {
    if (source) source.close();
    source = null;
    log.dataset.stream = "closed";
  });
  window.addEventListener("pageshow", (event) => { if (event.persisted && !source) open(); });
  open();
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

// A chat before its task: the reply is shown as the model writes it. The message goes to
// /chats/ID/reply, whose answer is a stream of Server-Sent Events; once the reply is stored
// the page is reloaded, which shows it rendered. Without this, the form posts and the page
// comes back with the whole reply.
function streamedChat() {
  const form = document.getElementById("composer");
  const list = document.getElementById("messages");
  if (!form || !list || document.getElementById("task-link") || !window.TextDecoder) return;
  form.addEventListener("submit", async (submitted) => {
    const field = form.querySelector("textarea[name=message]");
    if (!field || !field.value.trim()) return;
    submitted.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    const mine = document.createElement("li");
    mine.className = "mine";
    const said = document.createElement("p");
    said.className = "pre";
    said.textContent = field.value;
    mine.appendChild(said);
    list.appendChild(mine);
    const reply = document.createElement("li");
    reply.className = "agent";
    reply.id = "streaming-reply";
    reply.setAttribute("aria-live", "polite");
    const text = document.createElement("p");
    text.className = "pre";
    reply.appendChild(text);
    list.appendChild(reply);
    field.value = "";
    const url = form.action.replace(/\/messages$/, "/reply");
    // The form may be sent again once there is no reply to wait for.
    const ready = () => {
      const button = form.querySelector("button[type=submit]");
      if (!button) return;
      setTimeout(() => {
        button.disabled = false;
        button.removeAttribute("aria-busy");
        button.textContent = "Send";
      }, 0);
    };
    const response = await fetch(url, { method: "POST", body, credentials: "same-origin" });
    if (!response.ok || !response.body) {
      text.textContent = await response.text();
      ready();
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // Server-Sent Events end a line with CR, LF or both; the model's text may hold any.
      buffered += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        let kind = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        const payload = data.join("\n");
        if (kind === "delta") text.textContent += payload;
        else if (kind === "reset") text.textContent = payload;
        else if (kind === "done") { window.location.reload(); return; }
        else if (kind === "note") { text.textContent = payload; ready(); return; }
      }
    }
    ready();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  liveLog();
  streamedChat();
  checkAsYouType();
  busyForms();
});

// Times: each <time datetime> reads in the reader's own zone, as "5 min ago" with the exact
// moment in its title (a log card's, `data-clock`, as the clock time); the UTC text the server
// wrote is what shows without the script.
function drawTimes(root) {
  const ago = (ms) => {
    const future = ms < 0;
    const s = Math.round(Math.abs(ms) / 1000);
    const say = (n, unit) => (future ? "in " + n + " " + unit : n + " " + unit + " ago");
    if (s < 45) return future ? "in a moment" : "just now";
    if (s < 3600) return say(Math.round(s / 60), "min");
    if (s < 86400) return say(Math.round(s / 3600), "h");
    if (s < 86400 * 30) { const d = Math.round(s / 86400); return say(d, d === 1 ? "day" : "days"); }
    return null;
  };
  for (const time of (root || document).querySelectorAll("time[datetime]")) {
    const at = new Date(time.getAttribute("datetime"));
    if (isNaN(at)) continue;
    const exact = at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    time.title = exact + " (" + time.getAttribute("datetime").slice(0, 16).replace("T", " ") + " UTC)";
    time.textContent = time.hasAttribute("data-clock") ? at.toLocaleTimeString() : ago(Date.now() - at.getTime()) || exact;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  drawTimes(document);
  // Times drawn into the page later (a live list) are caught at the next tick.
  setInterval(() => drawTimes(document), 30000);
});

// Deleting, revoking and cancelling ask first. Without the script the server asks on a page
// of its own; with it, a dialog asks and the form goes with its answer.
(function confirmations() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    if (!form.querySelector("input[name=confirm]")) {
      const yes = document.createElement("input");
      yes.type = "hidden";
      yes.name = "confirm";
      yes.value = "yes";
      form.appendChild(yes);
    }
  });
})();

// The task list follows its tasks: /tasks/live sends the rows again when they change
// (`rows`) and how many tasks need the person (`attention`), which the navigation and the
// page's title show. Without the script the list is as fresh as its last load. The stream is
// closed when the page is left: a page kept for the Back button would otherwise hold one of
// the few connections a browser opens to a server, and the next page's requests would wait.
(function liveTaskList() {
  const holder = document.getElementById("task-rows");
  if (!holder || !holder.dataset.live || !window.EventSource) return;
  let source = null;
  const open = () => {
    source = new EventSource(holder.dataset.live);
    source.addEventListener("rows", (message) => {
      // Replacing the rows would drop the focus of a link the person is on: keep its place.
      const focused = document.activeElement && holder.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
      holder.innerHTML = message.data;
      if (focused) {
        const again = holder.querySelector('a[href="' + CSS.escape(focused) + '"]');
        if (again) again.focus();
      }
    });
    source.addEventListener("attention", (message) => {
      const count = parseInt(message.data, 10) || 0;
      const badge = document.getElementById("nav-attention");
      if (badge) {
        badge.hidden = count === 0;
        const number = badge.querySelector("b");
        if (number) number.textContent = String(count);
      }
      document.title = (count > 0 ? "(" + count + ") " : "") + document.title.replace(/^\(\d+\) /, "");
    });
  };
  window.addEventListener("pagehide", () => { if (source) source.close(); source = null; });
  window.addEventListener("pageshow", (event) => { if (event.persisted && !source) open(); });
  open();
})();

// The diff page: a Copy button beside each checkout command (without the script the command
// is plain text, selected whole by one click), and a file reached by its anchor unfolds.
(function diffPage() {
  const copy = async (button) => {
    const code = document.getElementById(button.dataset.copy);
    if (!code) return;
    let done = false;
    try {
      await navigator.clipboard.writeText(code.textContent);
      done = true;
    } catch (_) {
      // No clipboard API (a page not served from a secure origin): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    button.textContent = done ? "Copied" : "Selected: press Ctrl+C";
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  };
  const unfold = () => {
    const id = decodeURIComponent(window.location.hash.slice(1));
    const target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") target.open = true;
  };
  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      button.hidden = false;
      button.addEventListener("click", () => copy(button));
    }
    unfold();
  });
  window.addEventListener("hashchange", unfold);
})();
