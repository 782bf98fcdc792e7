// Electronic credential page (GS-10(1)): log in, show the credential with a QR code that rotates
// every 30 s (tokens live 60 s), and record "credential shown" (JL-8(1)). No external resources.
"use strict";
(function () {
  const REFRESH_MS = 30000;
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
      device_unavailable: "，记录仪不可用" },
    en: { valid: "Valid", expired: "Expired", not_yet_valid: "Not yet valid", suspended: "Suspended",
      revoked: "Revoked", shown: "Showing recorded", failed: "Failed",
      bookmarked: "; recorder asked to bookmark",
      no_device_assigned: "; no recorder checked out", device_unavailable: "; recorder unavailable" },
  };
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const lang = (new URLSearchParams(location.search).get("lang") || "").startsWith("en") ? "en" : "zh";
  let timer = null;
  let expiresAt = 0;

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
    start();
  }

  function logout() {
    sessionStorage.removeItem("zfjl.access");
    sessionStorage.removeItem("zfjl.refresh");
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

  async function refresh() {
    const response = await api("/api/v1/me/credential");
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("c-status").textContent = errorText(body);
      $("c-status").className = "verdict bad";
      return;
    }
    $("c-name").textContent = body.name;
    $("c-unit").textContent = body.unit;
    $("c-category").textContent = body.enforcement_category;
    $("c-number").textContent = body.certificate_number || "";
    $("c-validity").textContent = (body.valid_from || "") + " — " + (body.valid_to || "");
    $("c-status").textContent = STATUS[lang][body.validity] || body.validity;
    $("c-status").className = "verdict " + (body.validity === "valid" ? "ok" : "bad");
    // The SVG comes from our own server (segno), never from user input.
    $("qr").innerHTML = body.qr_svg;
    $("qr").dataset.token = body.token;
    $("qr").dataset.payload = body.qr_payload;
    expiresAt = Date.parse(body.token_expires_at);
    if ($("photo").hidden) loadPhoto(body.photo_url);
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
    const response = await api("/api/v1/me/credential/shown", {
      method: "POST", body: JSON.stringify({ case_id: caseId }),
    });
    const body = await response.json().catch(() => ({}));
    $("shown").textContent = response.ok
      ? STATUS[lang].shown + " " + new Date(body.event.occurred_at).toLocaleTimeString() +
        (STATUS[lang][body.recorder_bookmark ? "bookmarked" : body.recorder_bookmark_reason] || "")
      : errorText(body);
  }

  function tick() {
    const left = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
    $("countdown").textContent = left ? "(" + left + " s)" : "";
  }

  function start() {
    $("login").hidden = true;
    $("credential").hidden = false;
    $("logout").hidden = false;
    refresh();
    loadCases();
    clearInterval(timer);
    let n = 0;
    timer = setInterval(() => {
      n += 1;
      tick();
      if (n % (REFRESH_MS / 1000) === 0) refresh();
    }, 1000);
  }

  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("show").addEventListener("click", show);
  app.dataset.ready = "1";
  if (tokens().access) start();
})();
