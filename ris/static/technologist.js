// Technologist room list: refresh the rows from the JSON endpoint every few seconds, so an
// MPPS from the scanner (or a check-in at the desk) shows up without a click. Rows that did
// not change are left alone: a reason being typed, or the focus, survives the refresh.
// The page works without this file (it is then as fresh as its last load).
"use strict";

(() => {
  const page = document.querySelector("[data-rooms]");
  if (!page) return;
  const url = page.dataset.rowsUrl;
  const every = Math.max(2, Number(page.dataset.refreshSeconds || 10)) * 1000;
  const rowTemplate = page.querySelector("template[data-row-template]");
  const stepTemplates = new Map(
    Array.from(page.querySelectorAll("template[data-step-template]")).map((t) => [t.dataset.stepTemplate, t]),
  );
  const updated = page.querySelector("[data-updated]");
  // What a row shows apart from its wait, which changes every minute while a patient waits.
  const stamp = (line) => JSON.stringify({ ...line, wait: "", wait_class: "" });
  const stamps = new WeakMap();
  let busy = false;

  const sections = () => new Map(Array.from(page.querySelectorAll("section[data-room]")).map((s) => [s.dataset.room, s]));

  function say(text, stale) {
    if (!updated) return;
    updated.textContent = text;
    updated.classList.toggle("stale", Boolean(stale));
  }

  function fill(tr, line) {
    tr.dataset.exam = String(line.exam_id);
    tr.className = `row-${line.status}`;
    tr.querySelectorAll("[data-field]").forEach((cell) => {
      cell.textContent = line[cell.dataset.field] ?? "";
    });
    tr.querySelectorAll("[data-link]").forEach((link) => {
      const href = line[link.dataset.link];
      if (href) link.setAttribute("href", href);
      else link.removeAttribute("href");
    });
    tr.querySelectorAll("[data-class]").forEach((cell) => {
      cell.className = cell.dataset.class.replace(/\{(\w+)\}/g, (_m, key) => line[key] ?? "");
    });
    const alerts = tr.querySelector("[data-alerts]");
    alerts.replaceChildren(
      ...line.alerts.map(([css, label, detail]) => {
        const badge = document.createElement("span");
        badge.className = `alert-badge ${css}`;
        badge.textContent = label;
        if (detail) badge.title = detail;
        return badge;
      }),
    );
    const steps = tr.querySelector("[data-steps]");
    steps.replaceChildren(
      ...line.steps
        .filter(([name]) => stepTemplates.has(name))
        .map(([name, href]) => {
          const piece = stepTemplates.get(name).content.firstElementChild.cloneNode(true);
          const form = piece.matches("form") ? piece : piece.querySelector("form");
          form.setAttribute("action", href);
          return piece;
        }),
    );
    stamps.set(tr, stamp(line));
  }

  function newRow(line) {
    const tr = rowTemplate.content.querySelector("tr").cloneNode(true);
    fill(tr, line);
    return tr;
  }

  function setWait(tr, line) {
    const wait = tr.querySelector("[data-field=wait]");
    if (wait.textContent !== line.wait) wait.textContent = line.wait;
    const css = `wait ${line.wait_class}`.trim();
    if (wait.className !== css) wait.className = css;
  }

  function updateSection(section, room) {
    const body = section.querySelector("tbody[data-rows]");
    const existing = new Map(Array.from(body.rows).map((tr) => [tr.dataset.exam, tr]));
    const wanted = room.rows.map((line) => {
      let tr = existing.get(String(line.exam_id));
      if (!tr) {
        tr = newRow(line);
      } else if (stamps.get(tr) !== stamp(line)) {
        fill(tr, line); // the status, the patient's alerts or the steps changed
      }
      setWait(tr, line);
      return tr;
    });
    const same = wanted.length === body.rows.length && wanted.every((tr, n) => body.rows[n] === tr);
    if (!same) body.replaceChildren(...wanted); // rows came, went or moved
    section.querySelector("[data-count]").textContent = String(room.rows.length);
    section.querySelector("[data-empty]").hidden = room.rows.length > 0;
  }

  function apply(data) {
    const shown = sections();
    const codes = data.rooms.map((room) => room.code);
    if (codes.length !== shown.size || codes.some((code) => !shown.has(code))) {
      window.location.reload(); // a room opened or closed: rebuild the page once
      return;
    }
    data.rooms.forEach((room) => updateSection(shown.get(room.code), room));
    const at = new Date(data.updated_at);
    const time = Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString(document.documentElement.lang || undefined);
    say((page.dataset.updatedFormat || "{time}").replace("{time}", time), false);
  }

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) {
        say(page.dataset.signedOut, true);
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      apply(await response.json());
    } catch (_error) {
      say(page.dataset.stale, true);
    } finally {
      busy = false;
    }
  }

  // The rows the server rendered, as the endpoint would send them: no refill on the first refresh.
  function remember() {
    const island = page.querySelector("script[data-initial]");
    if (!island) return;
    const shown = sections();
    JSON.parse(island.textContent).rooms.forEach((room) => {
      const section = shown.get(room.code);
      if (!section) return;
      const rows = new Map(Array.from(section.querySelectorAll("tbody[data-rows] tr")).map((tr) => [tr.dataset.exam, tr]));
      room.rows.forEach((line) => {
        const tr = rows.get(String(line.exam_id));
        if (tr) stamps.set(tr, stamp(line));
      });
    });
  }

  remember();
  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
})();
