// Front desk: keyboard moves on the day board, live wait times, quick filter, print.
// Every page works without this file.
"use strict";

(() => {
  const board = document.querySelector("table[data-board]");
  if (board) {
    setUpRows(board);
    setUpWaitClock(board);
    setUpFilter(board);
  }
  document.querySelectorAll("[data-print]").forEach((button) => {
    button.addEventListener("click", () => window.print());
  });

  // Roving tabindex: one row is in the tab order; arrows move it, Enter opens the exam.
  function setUpRows(table) {
    const rows = () => Array.from(table.tBodies[0].rows).filter((row) => !row.hidden);
    // The current row, and its links and buttons, are in the tab order; no other row is.
    const makeCurrent = (row) => {
      table.querySelectorAll("tbody tr.current").forEach((r) => {
        r.classList.remove("current");
        r.setAttribute("tabindex", "-1");
        r.querySelectorAll("a, button").forEach((c) => c.setAttribute("tabindex", "-1"));
      });
      row.classList.add("current");
      row.setAttribute("tabindex", "0");
      row.querySelectorAll("a, button").forEach((c) => c.setAttribute("tabindex", "0"));
    };
    const focusRow = (row) => {
      if (!row) return;
      makeCurrent(row);
      row.focus();
    };
    const first = rows()[0];
    if (first) makeCurrent(first);
    table.addEventListener("keydown", (event) => {
      const row = event.target.closest && event.target.closest("tbody tr");
      if (!row) return;
      const visible = rows();
      const at = visible.indexOf(row);
      if (event.key === "ArrowDown") {
        event.preventDefault();
        focusRow(visible[Math.min(at + 1, visible.length - 1)]);
      } else if (event.key === "ArrowUp") {
        event.preventDefault();
        focusRow(visible[Math.max(at - 1, 0)]);
      } else if (event.key === "Home") {
        event.preventDefault();
        focusRow(visible[0]);
      } else if (event.key === "End") {
        event.preventDefault();
        focusRow(visible[visible.length - 1]);
      } else if (event.key === "Enter" && event.target === row && row.dataset.href) {
        event.preventDefault();
        window.location.assign(row.dataset.href);
      }
    });
    table.addEventListener("click", (event) => {
      const row = event.target.closest("tbody tr");
      if (!row) return;
      if (event.target.closest("a, button, input, form")) return;
      if (row.dataset.href) window.location.assign(row.dataset.href);
    });
    table.addEventListener("focusin", (event) => {
      const row = event.target.closest("tbody tr");
      if (row && !row.classList.contains("current")) makeCurrent(row);
    });
  }

  // Wait times since arrival, refreshed every 30 s against the server's clock.
  function setUpWaitClock(table) {
    const serverNow = Date.parse(table.dataset.now || "");
    const skew = Number.isNaN(serverNow) ? 0 : serverNow - Date.now();
    const warn = Number(table.dataset.waitWarn || 15);
    const late = Number(table.dataset.waitLate || 30);
    const format = table.dataset.waitFormat || "{n} min";
    const refresh = () => {
      const now = Date.now() + skew;
      table.querySelectorAll("[data-arrived-at]").forEach((cell) => {
        const since = Date.parse(cell.dataset.arrivedAt);
        if (Number.isNaN(since)) return;
        const minutes = Math.max(0, Math.floor((now - since) / 60000));
        cell.textContent = format.replace("{n}", String(minutes));
        cell.classList.remove("wait-ok", "wait-warn", "wait-late");
        cell.classList.add(minutes >= late ? "wait-late" : minutes >= warn ? "wait-warn" : "wait-ok");
      });
    };
    window.setInterval(refresh, 30000);
  }

  // Find in this list: hides the rows whose text does not contain every typed word.
  function setUpFilter(table) {
    const input = document.querySelector("[data-board-filter]");
    if (!input) return;
    const fold = (text) => text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
    const texts = new Map();
    Array.from(table.tBodies[0].rows).forEach((row) => texts.set(row, fold(row.textContent)));
    input.addEventListener("input", () => {
      const words = fold(input.value).split(/\s+/).filter(Boolean);
      texts.forEach((text, row) => {
        row.hidden = !words.every((word) => text.includes(word));
      });
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" || event.key === "Enter") {
        const first = Array.from(table.tBodies[0].rows).find((row) => !row.hidden);
        if (first) {
          event.preventDefault();
          first.focus();
        }
      }
    });
  }
})();
