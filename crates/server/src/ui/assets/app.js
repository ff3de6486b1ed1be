// duhub dashboard: the little the server cannot do alone. Confirmations of destructive forms,
// the import form (uploads with progress, then the import and its errors), and live parts of a
// page fed by server-sent events (EventSource, no polling). Everything else is plain HTML.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.classList && form.classList.contains("confirm") && !window.confirm(form.dataset.confirm || "Are you sure?")) {
    event.preventDefault();
  }
});

function upload(file, csrf, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/ui/updates/upload");
    request.setRequestHeader("x-csrf-token", csrf);
    request.setRequestHeader("content-type", "application/octet-stream");
    request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded); });
    request.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (_) { body = { message: request.responseText }; }
      if (request.status === 201) resolve(body); else reject(new Error(body.message || ("upload failed: " + request.status)));
    });
    request.addEventListener("error", () => reject(new Error("the upload failed: network error")));
    request.send(file);
  });
}

function showErrors(list, error) {
  list.replaceChildren();
  const add = (target, message) => {
    const item = document.createElement("li");
    if (target) {
      const code = document.createElement("code");
      code.textContent = target;
      item.append(code, " ");
    }
    item.append(message);
    list.append(item);
  };
  const details = (error && error.details) || [];
  if (error && error.message) add(error.code || "", error.message);
  for (const detail of details) add(detail.target || detail.code || "", detail.message || "");
}

function setupImport(form) {
  const csrf = form.dataset.csrf;
  const progress = document.getElementById("import-progress");
  const status = document.getElementById("import-status");
  const errors = document.getElementById("import-errors");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const manifest = form.querySelector("#import-manifest").files[0];
    const files = Array.from(form.querySelector("#import-files").files);
    if (!manifest) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    errors.replaceChildren();
    const all = [manifest, ...files];
    const total = all.reduce((sum, f) => sum + f.size, 0) || 1;
    let done = 0;
    try {
      const uploaded = [];
      for (const file of all) {
        status.textContent = "Uploading " + file.name + "…";
        const result = await upload(file, csrf, (loaded) => { progress.value = Math.round(100 * (done + loaded) / total); });
        done += file.size;
        progress.value = Math.round(100 * done / total);
        uploaded.push(result);
      }
      status.textContent = "Importing…";
      const body = {
        manifest: uploaded[0],
        files: files.map((file, i) => ({ filename: file.name, url: uploaded[i + 1].url })),
      };
      const response = await fetch("/ui/updates/import", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify(body),
      });
      const outcome = await response.json();
      if (outcome.status === "Succeeded") {
        status.textContent = "Imported " + outcome.update + ".";
        window.setTimeout(() => window.location.reload(), 800);
      } else if (outcome.status === "Running") {
        status.textContent = "The import is still running; reload this page later.";
      } else {
        status.textContent = "The import failed.";
        showErrors(errors, outcome.error || { message: "unknown error" });
      }
    } catch (error) {
      status.textContent = "The import failed.";
      showErrors(errors, { message: error.message });
    } finally {
      button.disabled = false;
    }
  });
}

function setupLive(element) {
  const source = new EventSource(element.dataset.events);
  source.addEventListener("update", (event) => {
    // Keep keyboard focus on the same control when the part around it is re-rendered.
    const active = document.activeElement;
    const key = active && element.contains(active) && active.closest("form") ? active.closest("form").action + active.textContent : null;
    element.innerHTML = event.data;
    if (key) {
      for (const button of element.querySelectorAll("form button")) {
        if (button.closest("form").action + button.textContent === key) { button.focus(); break; }
      }
    }
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      const note = document.createElement("p");
      note.className = "notice error";
      note.setAttribute("role", "alert");
      note.textContent = "Live updates stopped (signed out?). Reload the page.";
      element.prepend(note);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const importForm = document.getElementById("import-form");
  if (importForm) setupImport(importForm);
  for (const element of document.querySelectorAll("[data-events]")) setupLive(element);
});
