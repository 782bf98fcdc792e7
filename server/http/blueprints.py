"""Mounts every blueprint: the JSON API under /api/v1, device endpoints, and the pages."""

from __future__ import annotations

from flask import Flask

__all__ = ["register_blueprints"]


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint."""
    from server.http import openapi
    from server.http.api import auth, devices, fleet, health, recordings

    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(auth.bp, url_prefix="/api/v1/auth")
    app.register_blueprint(devices.bp, url_prefix="/api/v1/devices")
    app.register_blueprint(recordings.bp, url_prefix="/api/v1/recordings")
    from server.http.api import integrity  # JL-6: on-demand evidence scrub

    app.register_blueprint(integrity.bp, url_prefix="/api/v1/integrity")
    from server.http.api import ledger  # JL-6, JL-23: the evidence ledger (docs/ledger.md)

    app.register_blueprint(ledger.bp, url_prefix="/api/v1/ledger")
    app.register_blueprint(ledger.public_bp, url_prefix="/ledger/v1")
    # People, credentials and cases (GS-9, GS-10, JL-7 – JL-11).
    from server.http.api import cases, credentials, people
    from server.http.pages import mobile, verify

    app.register_blueprint(people.bp, url_prefix="/api/v1")
    app.register_blueprint(credentials.bp, url_prefix="/api/v1")
    app.register_blueprint(cases.bp, url_prefix="/api/v1/cases")
    app.register_blueprint(verify.bp)
    app.register_blueprint(mobile.bp)
    app.register_blueprint(fleet.bp, url_prefix="/api/v1/fleet")
    app.register_blueprint(fleet.device_bp, url_prefix="/provisioning/v1")
    # Enforcement sessions and continuity (JL-12, JL-15, JL-16).
    from server.http.api import sessions

    app.register_blueprint(sessions.bp, url_prefix="/api/v1/sessions")
    # Signed updates and staged rollouts (issue #5, docs/fleet.md).
    from server.http.api import rollouts

    app.register_blueprint(rollouts.bp, url_prefix="/api/v1/fleet")
    app.register_blueprint(rollouts.device_bp, url_prefix="/updates/v1")
    # Archive packages, case-file review and statistics (JL-18, JL-21, JL-22; docs/archives.md).
    from server.http.api import archives, statistics

    app.register_blueprint(archives.bp, url_prefix="/api/v1")
    app.register_blueprint(archives.reviews_bp, url_prefix="/api/v1")
    app.register_blueprint(statistics.bp, url_prefix="/api/v1/statistics")
    # Device admin console (server-rendered pages over the fleet services, issue #5).
    from server.http.pages.admin import console as admin_console

    app.register_blueprint(admin_console.bp)
    # Evidence governance: retention, holds, disposal, access approvals (JL-19, JL-20, issue 11).
    from server.http.api import governance

    app.register_blueprint(governance.bp, url_prefix="/api/v1/governance")
    # External provision through an expiring link to a sealed export package (JL-20).
    from server.http.api import provision

    app.register_blueprint(provision.bp, url_prefix="/api/v1/governance")
    app.register_blueprint(provision.public_bp, url_prefix="/provision/v1")
    # Evidence workspace (server-rendered pages over cases, sessions and recordings, issue 13).
    from server.http.pages import workspace

    app.register_blueprint(workspace.bp)
    # Prometheus figures for operators (docs/operations.md): loopback or ZFJL_METRICS_TOKEN only.
    from server.http.api import metrics

    app.register_blueprint(metrics.bp)
    # Publicity: the staff API and the public portal (issue #10, GS-5 – GS-19).
    from server.http.api import annual_reports, publicity
    from server.http.pages import portal

    app.register_blueprint(publicity.bp, url_prefix="/api/v1/publicity")
    app.register_blueprint(annual_reports.bp, url_prefix="/api/v1/publicity/annual-reports")
    # The before-enforcement catalogue (GS-9).
    from server.http.api import catalogue

    app.register_blueprint(catalogue.bp, url_prefix="/api/v1/publicity/catalogue")
    app.register_blueprint(portal.bp)
