// Electronic credential page (GS-10(1)): log in, show the credential with a QR code that changes every
// minute, and record "credential shown" (JL-8(1)). No external resources.
//
// Offline for a shift: the page fetches a batch of per-minute signed codes (12 h) and keeps it in
// localStorage; every second it shows the code of the current minute, with or without network. A
// service worker (/m/sw.js) keeps the page itself. Logging out deletes the batch.
"use strict";
(function () {
  const BATCH_KEY = "zfjl.credential_batch";
  const BATCH_MINUTES = 720;
  // Fetch a new batch once less than this much of it is left, at most every RETRY_MS while it fails.
  const REFILL_BELOW_MS = 6 * 3600 * 1000;
  const RETRY_MS = 5 * 60 * 1000;
  const EN = {
    app_title: "Enforcement ID", logout: "Log out", username: "Username", password: "Password",
    login: "Log in", name: "Name", unit: "Unit", category: "Category", number: "Certificate No.",
    validity: "Valid", qr_hint: "Let the party scan to verify; the code changes every minute",
    case: "Current case", no_case: "(no case)", show: "Show credential",
  };
  const STATUS = {
    zh: { valid: "证件有效", expired: "证件已过期", not_yet_valid: "证件尚未生效", suspended: "证件已暂扣",
      revoked: "证件已吊销", shown: "已记录出示证件", failed: "操作失败",
      bookmarked: "，已通知记录仪标记", no_device_assigned: "，未领用记录仪",
      device_unavailable: "，记录仪不可用", offline: "（离线）", no_codes: "离线二维码已用完，请联网后刷新" },
    en: { valid: "Valid", expired: "Expired", not_yet_valid: "Not yet valid", suspended: "Suspended",
      revoked: "Revoked", shown: "Showing recorded", failed: "Failed",
      bookmarked: "; recorder asked to bookmark",
      no_device_assigned: "; no recorder checked out", device_unavailable: "; recorder unavailable",
      offline: " (offline)", no_codes: "No offline codes left: connect to refresh" },
  };
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const lang = (new URLSearchParams(location.search).get("lang") || "").startsWith("en") ? "en" : "zh";
  let timer = null;
  let lastTry = 0;
  let shown = "";
  let held = null; // the parsed batch, so a tick does not parse 12 h of codes every second

  if (lang === "en") {
    document.documentElement.lang = "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      const text = EN[el.dataset.i18n];
      if (text) el.textContent = text;
    });
  }

  function tokens() {
    return { access: sessionStorage.getItem("zfjl.access"), refresh: sessionStorage.getItem("zfjl.refresh") };
  }

  async function api(path, options = {}, retried = false) {
    const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
    const access = tokens().access;
    if (access) headers.Authorization = "Bearer " + access;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401 && !retried && tokens().refresh) {
      const refreshed = await fetch("/api/v1/auth/refresh", {
        method: "POST", headers: { Authorization: "Bearer " + tokens().refresh },
      });
      if (refreshed.ok) {
        sessionStorage.setItem("zfjl.access", (await refreshed.json()).access_token);
        return api(path, options, true);
      }
      logout();
    }
    return response;
  }

  function errorText(body) {
    const error = (body && body.error) || {};
    return (lang === "en" ? error.message_en : error.message) || STATUS[lang].failed;
  }

  async function login(event) {
    event.preventDefault();
    $("login-error").hidden = true;
    const response = await fetch("/api/v1/auth/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("login-error").textContent = errorText(body);
      $("login-error").hidden = false;
      return;
    }
    sessionStorage.setItem("zfjl.access", body.access_token);
    sessionStorage.setItem("zfjl.refresh", body.refresh_token);
    forgetBatch(); // a shared phone: never show the codes of whoever used it before
    start();
  }

  function logout() {
    sessionStorage.removeItem("zfjl.access");
    sessionStorage.removeItem("zfjl.refresh");
    forgetBatch();
    clearInterval(timer);
    $("credential").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
  }

  async function loadPhoto(url) {
    if (!url) return;
    const response = await api(url);
    if (response.ok) {
      $("photo").src = URL.createObjectURL(await response.blob());
      $("photo").hidden = false;
    }
  }

  function storedBatch() {
    if (held) return held;
    try {
      const batch = JSON.parse(localStorage.getItem(BATCH_KEY) || "null");
      held = batch && Array.isArray(batch.tokens) ? batch : null;
    } catch (_error) {
      held = null;
    }
    return held;
  }

  function forgetBatch() {
    localStorage.removeItem(BATCH_KEY);
    held = null;
    shown = "";
  }

  function batchEnd(batch) {
    return batch && batch.tokens.length ? Date.parse(batch.tokens[batch.tokens.length - 1].valid_to) : 0;
  }

  async function refill() {
    lastTry = Date.now();
    let response;
    try {
      response = await api("/api/v1/me/credential/batch", {
        method: "POST", body: JSON.stringify({ minutes: BATCH_MINUTES }),
      });
    } catch (_offline) {
      return;  // no network: keep what we hold
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (!storedBatch()) {
        $("c-status").textContent = errorText(body);
        $("c-status").className = "verdict bad";
      }
      return;
    }
    localStorage.setItem(BATCH_KEY, JSON.stringify(body));
    held = body;
    render();
  }

  function showCredential(data) {
    $("c-name").textContent = data.name;
    $("c-unit").textContent = data.unit;
    $("c-category").textContent = data.enforcement_category;
    $("c-number").textContent = data.certificate_number || "";
    $("c-validity").textContent = (data.valid_from || "") + " — " + (data.valid_to || "");
    $("c-status").textContent = (STATUS[lang][data.validity] || data.validity) +
      (navigator.onLine ? "" : STATUS[lang].offline);
    $("c-status").className = "verdict " + (data.validity === "valid" ? "ok" : "bad");
  }

  // Draw the QR code of ``payload`` (encoded here by qr.js: the batch carries no images), with a
  // 4-module quiet zone, as one path.
  function drawQr(payload) {
    const NS = "http://www.w3.org/2000/svg";
    const qr = window.zfjlQr.encode(payload);
    const side = qr.size + 8;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + side + " " + side);
    const paper = document.createElementNS(NS, "rect");
    paper.setAttribute("width", String(side));
    paper.setAttribute("height", String(side));
    paper.setAttribute("fill", "#fff");
    svg.appendChild(paper);
    let d = "";
    for (let y = 0; y < qr.size; y += 1) {
      for (let x = 0; x < qr.size; x += 1) {
        if (qr.dark(x, y)) d += "M" + (x + 4) + " " + (y + 4) + "h1v1h-1z";
      }
    }
    const ink = document.createElementNS(NS, "path");
    ink.setAttribute("d", d);
    ink.setAttribute("fill", "#000");
    svg.appendChild(ink);
    $("qr").replaceChildren(svg);
  }

  // The code of the current minute from the batch; the countdown to the next one.
  function render() {
    const batch = storedBatch();
    if (!batch) return;
    showCredential(batch.credential);
    const now = Date.now();
    const current = batch.tokens.find((t) => Date.parse(t.valid_from) <= now && now < Date.parse(t.valid_to));
    if (!current) {
      if (shown) $("qr").replaceChildren();
      shown = "";
      $("qr").dataset.token = "";
      $("countdown").textContent = STATUS[lang].no_codes;
      return;
    }
    if (current.token !== shown) {
      drawQr(current.qr_payload);
      $("qr").dataset.token = current.token;
      $("qr").dataset.payload = current.qr_payload;
      $("qr").dataset.validFrom = current.valid_from;
      shown = current.token;
      if ($("photo").hidden && tokens().access && navigator.onLine) {
        loadPhoto(batch.credential.photo_url).catch(() => {});
      }
    }
    const left = Math.max(0, Math.round((Date.parse(current.valid_to) - now) / 1000));
    $("countdown").textContent = "(" + left + " s)";
  }

  async function loadCases() {
    const response = await api("/api/v1/me/cases");
    if (!response.ok) return;
    const select = $("case");
    for (const item of (await response.json()).items) {
      const option = document.createElement("option");
      option.value = String(item.id);
      option.textContent = item.number + (item.title ? " " + item.title : "");
      select.appendChild(option);
    }
  }

  async function show() {
    const caseId = $("case").value ? Number($("case").value) : null;
    let response;
    try {
      response = await api("/api/v1/me/credential/shown", {
        method: "POST", body: JSON.stringify({ case_id: caseId }),
      });
    } catch (_offline) {
      $("shown").textContent = STATUS[lang].failed + STATUS[lang].offline;
      return;
    }
    const body = await response.json().catch(() => ({}));
    $("shown").textContent = response.ok
      ? STATUS[lang].shown + " " + new Date(body.event.occurred_at).toLocaleTimeString() +
        (STATUS[lang][body.recorder_bookmark ? "bookmarked" : body.recorder_bookmark_reason] || "")
      : errorText(body);
  }

  function tick() {
    render();
    const batch = storedBatch();
    const due = !batch || batchEnd(batch) - Date.now() < REFILL_BELOW_MS;
    if (due && tokens().access && Date.now() - lastTry > RETRY_MS) refill();
  }

  function start() {
    $("login").hidden = true;
    $("credential").hidden = false;
    $("logout").hidden = false;
    render();
    if (tokens().access) {
      refill();
      loadCases().catch(() => {});
    }
    clearInterval(timer);
    timer = setInterval(tick, 1000);
  }

  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("show").addEventListener("click", show);
  app.dataset.ready = "1";
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/m/sw.js", { scope: "/m/" }).catch(() => {});
  }
  // A batch that still covers the current minute shows the credential even after the tab was closed
  // without network (the login tokens live in sessionStorage; the codes in localStorage until logout).
  if (tokens().access || batchEnd(storedBatch()) > Date.now()) start();
})();
