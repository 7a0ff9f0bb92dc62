// Quota administration on the GPU capacity page: calls the JSON API, then reloads the page.
// The server checks the Admin role on every change; these controls only exist for admins.
"use strict";

(function () {
  const api = document.body.dataset.api;
  const status = document.querySelector("#quota-form output");

  function optionalInt(value) {
    return value === "" || value === undefined ? null : Number.parseInt(value, 10);
  }

  // GPU amounts: whole or fractional GPUs (2.5); the API also takes milli-GPUs ("2500m").
  function optionalGpus(value) {
    if (value === "" || value === undefined || value === null) return null;
    const text = String(value).trim();
    return text.endsWith("m") ? text : Number(text);
  }

  async function send(method, path, body) {
    const response = await fetch(api + path, {
      method: method,
      credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!response.ok) {
      const payload = await response.json().catch(() => ({}));
      const detail = Array.isArray(payload.detail)
        ? payload.detail.map((d) => d.loc.slice(-1)[0] + ": " + d.msg).join("; ")
        : payload.detail || response.statusText;
      throw new Error(detail);
    }
    return response;
  }

  function report(error) {
    if (status) {
      status.textContent = error.message;
    } else {
      window.alert(error.message);
    }
  }

  const form = document.getElementById("quota-form");
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const path = "/quotas/" + encodeURIComponent(data.get("pool")) + "/" + encodeURIComponent(data.get("team"));
      send("PUT", path, {
        nominal: optionalGpus(data.get("nominal")),
        borrowing_limit: optionalGpus(data.get("borrowing_limit")),
        lending_limit: optionalGpus(data.get("lending_limit")),
      }).then(() => window.location.reload(), report);
    });
  }

  document.querySelectorAll("button.edit-quota").forEach((button) => {
    button.addEventListener("click", () => {
      if (!form) return;
      form.elements.team.value = button.dataset.team;
      form.elements.pool.value = button.dataset.pool;
      form.elements.nominal.value = button.dataset.nominal;
      form.elements.borrowing_limit.value = button.dataset.borrowing;
      form.elements.lending_limit.value = button.dataset.lending;
      form.elements.nominal.focus();
    });
  });

  document.querySelectorAll("button.delete-quota").forEach((button) => {
    button.addEventListener("click", () => {
      const { team, pool } = button.dataset;
      if (!window.confirm("Remove the quota of " + team + " in " + pool + "?")) return;
      const path = "/quotas/" + encodeURIComponent(pool) + "/" + encodeURIComponent(team);
      send("DELETE", path).then(() => window.location.reload(), report);
    });
  });

  document.querySelectorAll("button.edit-pool").forEach((button) => {
    button.addEventListener("click", () => {
      const answer = window.prompt("GPUs in pool " + button.dataset.pool + ":", button.dataset.capacity);
      if (answer === null) return;
      send("PUT", "/pools/" + encodeURIComponent(button.dataset.pool), {
        capacity: optionalInt(answer),
        gpu_type: button.dataset.gpuType || null,
      }).then(() => window.location.reload(), report);
    });
  });

  // Keep the numbers current while nobody is editing.
  window.setInterval(() => {
    const editing = document.activeElement && document.activeElement.closest("form");
    if (!editing && document.visibilityState === "visible") window.location.reload();
  }, 30000);
})();
