// Keyboard shortcuts for the review page. Every action is a plain form; keys submit them.
"use strict";

function typing(event) {
  const t = event.target;
  return t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName);
}

function go(selector) {
  const link = document.querySelector(selector);
  if (link) window.location.href = link.href;
}

function listKeys() {
  const rows = Array.from(document.querySelectorAll("tr.row"));
  let current = -1;
  const select = (i) => {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, j) => r.classList.toggle("selected", j === current));
    rows[current].scrollIntoView({ block: "nearest" });
  };
  rows.forEach((row) => row.addEventListener("click", (e) => {
    if (e.target.tagName !== "A") window.location.href = row.dataset.href;
  }));
  document.querySelectorAll("#filters select").forEach((s) =>
    s.addEventListener("change", () => s.form.submit()));
  return {
    j: () => select(current + 1),
    k: () => select(current - 1),
    Enter: () => { if (current >= 0) window.location.href = rows[current].dataset.href; },
    o: () => { if (current >= 0) window.location.href = rows[current].dataset.href; },
    "/": () => document.getElementById("q").focus(),
    "]": () => go("#next-page"),
    "[": () => go("#prev-page"),
    s: () => { window.location.href = "/summary"; },
  };
}

function recordKeys() {
  const turns = Array.from(document.querySelectorAll("li.turn"));
  let current = -1;
  const select = (i) => {
    if (!turns.length) return;
    current = Math.max(0, Math.min(turns.length - 1, i));
    turns.forEach((t, j) => t.classList.toggle("selected", j === current));
    turns[current].scrollIntoView({ block: "nearest" });
  };
  const submit = (id) => {
    const button = document.getElementById(id);
    if (button && !button.disabled) button.form.requestSubmit(button);
  };
  // In a textarea: Ctrl/Cmd+Enter saves, Escape closes the editor without saving.
  document.querySelectorAll("textarea").forEach((area) => area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); area.form.requestSubmit(); }
    if (e.key === "Escape") {
      const details = area.closest("details.edit");
      if (details) { area.value = area.defaultValue; details.open = false; area.blur(); }
    }
  }));
  const reason = document.getElementById("reason");
  if (reason) reason.addEventListener("keydown", (e) => { if (e.key === "Escape") reason.blur(); });
  return {
    a: () => submit("accept"),
    r: () => { if (reason) reason.focus(); },
    u: () => submit("undo"),
    j: () => select(current + 1),
    k: () => select(current - 1),
    e: () => {
      const turn = turns[current >= 0 ? current : 0];
      if (!turn) return;
      select(turns.indexOf(turn));
      const details = turn.querySelector("details.edit");
      details.open = true;
      const area = details.querySelector("textarea");
      area.focus();
      area.setSelectionRange(area.value.length, area.value.length);
    },
    n: () => go("#next"),
    ArrowRight: () => go("#next"),
    p: () => go("#prev"),
    ArrowLeft: () => go("#prev"),
    b: () => go("#back"),
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const keys = page === "list" ? listKeys() : page === "record" ? recordKeys() : { b: () => { window.location.href = "/"; } };
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const action = keys[e.key];
    if (action) { e.preventDefault(); action(); }
  });
});
