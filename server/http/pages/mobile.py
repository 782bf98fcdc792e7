"""The mobile credential page ``/m/`` (GS-10(1)): an installable web app, no external CDN.

It works a shift without network: a service worker (``/m/sw.js``, scope ``/m/``) keeps the page and its
script, and the page keeps a batch of per-minute signed codes (``POST /api/v1/me/credential/batch``)
in the browser's storage and shows the one of the current minute.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue

from server.http.openapi import api_view

__all__ = ["ICON_SVG", "bp"]

bp = Blueprint("mobile", __name__)

# The home-screen icon: a badge shape drawn inline, so nothing is fetched from elsewhere.
ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 192 192">'
    '<rect width="192" height="192" rx="36" fill="#1f4e9a"/>'
    '<path d="M96 30l52 20v40c0 34-22 62-52 72-30-10-52-38-52-72V50z" fill="#fff"/>'
    '<path d="M74 96l16 16 30-34" stroke="#1f4e9a" stroke-width="12" fill="none" stroke-linecap="round" '
    'stroke-linejoin="round"/></svg>'
)


@bp.get("/m/")
@api_view(
    "mobile.page",
    "电子执法证页面 / the mobile credential page",
    auth="public",
    response_content_type="text/html",
)
def page() -> ResponseReturnValue:
    """The page; it logs in and fetches the credential through the API."""
    lang = "en" if request.args.get("lang", "").lower().startswith("en") else "zh"
    response = Response(render_template("people/mobile.html", lang=lang, t={"title": "电子执法证"}))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'"
    )
    return response


@bp.get("/m/manifest.json")
@api_view(
    "mobile.manifest",
    "网页应用清单 / web app manifest",
    auth="public",
    response_content_type="application/manifest+json",
)
def manifest() -> ResponseReturnValue:
    """The web app manifest, so the page can be added to the home screen."""
    response = jsonify(
        name="电子执法证",
        short_name="执法证",
        lang="zh-CN",
        start_url=url_for("mobile.page"),
        scope=url_for("mobile.page"),
        display="standalone",
        background_color="#ffffff",
        theme_color="#1f4e9a",
        icons=[{"src": url_for("mobile.icon"), "sizes": "any", "type": "image/svg+xml", "purpose": "any"}],
    )
    response.mimetype = "application/manifest+json"
    return response


@bp.get("/m/icon.svg")
@api_view("mobile.icon", "应用图标 / app icon", auth="public", response_content_type="image/svg+xml")
def icon() -> ResponseReturnValue:
    """The app icon."""
    return Response(ICON_SVG, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


# The files the page needs offline; API answers are never cached by the worker (the page keeps its batch).
_OFFLINE_FILES = ("people/qr.js", "people/mobile.js", "people/people.css")
_SERVICE_WORKER = """// Offline shell of the credential page (GS-10(1)): the page and its files only.
"use strict";
const CACHE = "zfjl-mobile-%(version)s";
const SHELL = %(shell)s;
self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys().then((keys) => Promise.all(
    keys.filter((key) => key.startsWith("zfjl-mobile-") && key !== CACHE).map((key) => caches.delete(key))
  )).then(() => self.clients.claim()));
});
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/api/")) {
    return;
  }
  // Network first, so a deployment is picked up at once; the cached copy when there is no network.
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok && SHELL.includes(url.pathname)) {
      const copy = response.clone();
      caches.open(CACHE).then((cache) => cache.put(url.pathname, copy));
    }
    return response;
  }).catch(() => caches.match(url.pathname, { ignoreSearch: true }).then((hit) => hit || Response.error())));
});
"""


@bp.get("/m/sw.js")
@api_view(
    "mobile.service_worker",
    "离线缓存脚本 / the page's offline service worker",
    auth="public",
    response_content_type="text/javascript",
)
def service_worker() -> ResponseReturnValue:
    """The service worker that keeps the page usable without network for a shift."""
    shell = [url_for("mobile.page"), url_for("mobile.manifest"), url_for("mobile.icon")]
    shell += [url_for("static", filename=name) for name in _OFFLINE_FILES]
    body = _SERVICE_WORKER % {"version": "1", "shell": json.dumps(shell)}
    return Response(
        body,
        mimetype="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": url_for("mobile.page")},
    )
