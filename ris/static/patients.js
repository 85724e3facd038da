// Patient search results: ↑/↓ move between result rows, Enter opens the focused one.
"use strict";

(() => {
  const links = () => Array.from(document.querySelectorAll("[data-results] [data-row-link]"));

  document.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.shiftKey) return;
    const rows = links();
    if (rows.length === 0) return;
    const active = document.activeElement;
    const search = document.querySelector("[data-search]");
    const index = rows.indexOf(active);
    let target = null;
    if (event.key === "ArrowDown") {
      if (index >= 0) target = rows[Math.min(index + 1, rows.length - 1)];
      else if (active === search || active === document.body) target = rows[0];
    } else if (index > 0) {
      target = rows[index - 1];
    } else if (index === 0) {
      target = search;
    }
    if (target) {
      event.preventDefault();
      target.focus(); // a focused link opens with Enter, as every link does
    }
  });
})();
