"""The one roles table: which role may call which endpoint (the API, the pages and the docs read it)."""

from __future__ import annotations

from server.domain.accounts.models import ROLES

__all__ = ["ENDPOINT_ROLES"]

_READ_EVIDENCE = ("officer", "legal_reviewer", "agency_head", "supervisor", "auditor", "system_admin")
_MANAGE_DEVICES = ("device_admin", "system_admin")
_READ_DEVICES = ("device_admin", "supervisor", "auditor", "system_admin")
_MANAGE_PEOPLE = ("agency_head", "system_admin")
_READ_ACCOUNTS = ("agency_head", "supervisor", "auditor", "system_admin")
_CREDENTIAL_HOLDERS = ("officer", "auxiliary")
_READ_CASES = (
    "officer",
    "auxiliary",
    "legal_reviewer",
    "agency_head",
    "supervisor",
    "auditor",
    "system_admin",
)
_GOVERNANCE_READERS = ("legal_reviewer", "agency_head", "supervisor", "auditor", "system_admin")
# JL-20: anyone who works with evidence may ask for more than their duty gives; bodies ask to retrieve.
_REQUESTERS = ("officer", "auxiliary", "legal_reviewer", "agency_head", "supervisor", "auditor")
# JL-19: legal holds are placed by the agency's reviewers and head and by supervisory and audit bodies.
_HOLDERS = ("legal_reviewer", "agency_head", "supervisor", "auditor")
_WRITE_CASE_EVENTS = ("officer", "auxiliary", "legal_reviewer", "agency_head", "system_admin")
# Publicity (GS-18): officers collect; legal reviewers and heads review and publish; supervisors and
# auditors watch (GS-22). Who of them may do which transition is the workflow table's rule
# (server/domain/publicity/workflow.py), with the role → duty map in publicity/service.py.
_READ_PUBLICITY = ("officer", "legal_reviewer", "agency_head", "supervisor", "auditor", "system_admin")
_COLLECT_PUBLICITY = ("officer", "legal_reviewer", "agency_head", "system_admin")
_REVIEW_PUBLICITY = ("legal_reviewer", "agency_head", "system_admin")

# The one place that says who may call which endpoint (blueprint.view name -> roles).
ENDPOINT_ROLES: dict[str, tuple[str, ...]] = {
    "recordings.list_recordings": _READ_EVIDENCE,
    "recordings.get_recording": _READ_EVIDENCE,
    "recordings.get_media": _READ_EVIDENCE,
    "devices.list_devices": _READ_DEVICES,
    "devices.get_device": _READ_DEVICES,
    "devices.register_device": _MANAGE_DEVICES,
    "devices.chain": ("device_admin", "legal_reviewer", "supervisor", "auditor", "system_admin"),
    "integrity.scrub": ("device_admin", "auditor", "system_admin"),  # JL-6: reads every object
    # The evidence ledger (docs/ledger.md): one tree for the deployment, so cross-agency readers only.
    "ledger.inclusion_proof": ("supervisor", "auditor", "system_admin"),
    "ledger.consistency_proof": ("supervisor", "auditor", "system_admin"),
    "ledger.get_leaf": ("supervisor", "auditor", "system_admin"),
    "ledger.get_row_leaf": ("supervisor", "auditor", "system_admin"),
    "ledger.sign_checkpoint": ("auditor", "system_admin"),
    "ledger.verify": ("auditor", "system_admin"),
    # People and cases (server/http/api/people.py, credentials.py, cases.py): GS-9, GS-10, JL-7 – JL-11.
    # Reads are further limited to the caller's agency except for supervisors, auditors and admins.
    "people.list_agencies": ROLES,
    "people.get_agency": ROLES,
    "people.create_agency": ("system_admin",),
    "people.update_agency": _MANAGE_PEOPLE,
    "people.list_users": _READ_ACCOUNTS,
    "people.create_user": ("system_admin",),
    "people.suspend_user": ("system_admin",),
    "people.reinstate_user": ("system_admin",),
    "people.list_officers": ROLES,
    "people.get_officer": ROLES,
    "people.get_officer_photo": ROLES,
    "people.create_officer": _MANAGE_PEOPLE,
    "people.update_officer": _MANAGE_PEOPLE,
    "people.put_officer_photo": _MANAGE_PEOPLE,
    "people.import_officers": _MANAGE_PEOPLE,
    "credentials.my_credential": _CREDENTIAL_HOLDERS,
    "credentials.credential_batch": _CREDENTIAL_HOLDERS,
    "credentials.my_photo": _CREDENTIAL_HOLDERS,
    "credentials.show_credential": _CREDENTIAL_HOLDERS,
    "credentials.my_cases": _CREDENTIAL_HOLDERS,
    "credentials.list_scans": _READ_ACCOUNTS,
    "cases.event_types": ROLES,
    "cases.list_cases": _READ_CASES,
    "cases.get_case": _READ_CASES,
    "cases.get_record": _READ_CASES,
    "cases.get_attachment": _READ_CASES,
    "cases.create_case": ("officer", "agency_head", "system_admin"),
    "cases.add_event": _WRITE_CASE_EVENTS,
    "cases.add_attachment": _WRITE_CASE_EVENTS,
    # JL-9(3)(4): moving a case through its lifecycle is for legal reviewers and heads; forcing an
    # incomplete record closed is for heads only (services/cases.py FORCE_CLOSE_ROLES).
    "cases.change_status": ("legal_reviewer", "agency_head", "system_admin"),
    # Fleet (server/http/api/fleet.py): device admins manage, readers may see the overview and alerts.
    "fleet.provision": _MANAGE_DEVICES,
    "fleet.pending_requests": _MANAGE_DEVICES,
    "fleet.decide_request": _MANAGE_DEVICES,
    "fleet.allowlist_add": _MANAGE_DEVICES,
    "fleet.allowlist_remove": _MANAGE_DEVICES,
    "fleet.list_devices": _READ_DEVICES,
    "fleet.revoke": _MANAGE_DEVICES,
    "fleet.rotate_credentials": _MANAGE_DEVICES,
    "fleet.set_profile": _MANAGE_DEVICES,
    "fleet.check_out": _MANAGE_DEVICES,
    "fleet.check_in": _MANAGE_DEVICES,
    "fleet.assignments": _READ_DEVICES,
    "fleet.alerts": _READ_DEVICES,
    "fleet.evaluate_alerts": _MANAGE_DEVICES,
    "fleet.set_config": _MANAGE_DEVICES,
    "fleet.shadow": _READ_DEVICES,
    "fleet.create_command": _MANAGE_DEVICES,
    "fleet.list_commands": _READ_DEVICES,
    # Signed updates (server/http/api/rollouts.py); devices download with the token in their command.
    "rollouts.upload_bundle": _MANAGE_DEVICES,
    "rollouts.list_bundles": _READ_DEVICES,
    "rollouts.create_rollout": _MANAGE_DEVICES,
    "rollouts.get_rollout": _READ_DEVICES,
    # Enforcement sessions (server/http/api/sessions.py): JL-16 continuity; only officers sign explanations.
    "sessions.list_sessions": _READ_EVIDENCE,
    "sessions.get_session": _READ_EVIDENCE,
    "sessions.get_timeline": _READ_EVIDENCE,
    "sessions.file_explanation": ("officer", "agency_head"),
    "sessions.sign_explanation": ("officer", "agency_head"),
    # Publicity (server/http/api/publicity.py): GS-7, GS-11 – GS-19, GS-22.
    "publicity.list_items": _READ_PUBLICITY,
    "publicity.deadlines": _READ_PUBLICITY,
    "publicity.alerts": _READ_PUBLICITY,
    "publicity.get_item": _READ_PUBLICITY,
    "publicity.review_item": _READ_PUBLICITY,
    "publicity.export": _READ_PUBLICITY,
    "publicity.collect_item": _COLLECT_PUBLICITY,
    "publicity.update_item": _COLLECT_PUBLICITY,
    "publicity.set_redactions": _COLLECT_PUBLICITY,
    "publicity.submit_item": _COLLECT_PUBLICITY,
    "publicity.return_item": _REVIEW_PUBLICITY,
    "publicity.publish_item": _REVIEW_PUBLICITY,
    "publicity.exclude_item": _REVIEW_PUBLICITY,
    "publicity.withdraw_item": _REVIEW_PUBLICITY,
    "publicity.order_withdrawal": _REVIEW_PUBLICITY,
    "publicity.correct_item": _REVIEW_PUBLICITY,
    "publicity.terminate_item": _REVIEW_PUBLICITY,
    "publicity.decide_correction": _REVIEW_PUBLICITY,
    "publicity.load_calendar": ("system_admin",),
    # Annual reports (server/http/api/annual_reports.py): GS-17, with the publicity duties above.
    "annual_reports.list_reports": _READ_PUBLICITY,
    "annual_reports.get_report": _READ_PUBLICITY,
    "annual_reports.export_csv": _READ_PUBLICITY,
    "annual_reports.generate_report": _COLLECT_PUBLICITY,
    "annual_reports.submit_report": _COLLECT_PUBLICITY,
    "annual_reports.return_report": _REVIEW_PUBLICITY,
    "annual_reports.publish_report": _REVIEW_PUBLICITY,
    "annual_reports.correct_report": _REVIEW_PUBLICITY,
    "annual_reports.list_figures": _READ_PUBLICITY,
    "annual_reports.enter_figure": _COLLECT_PUBLICITY,
    # The before-enforcement catalogue (server/http/api/catalogue.py): GS-9, with the same duties.
    "catalogue.list_entries": _READ_PUBLICITY,
    "catalogue.get_entry": _READ_PUBLICITY,
    "catalogue.list_updates": _READ_PUBLICITY,
    "catalogue.create_entry": _COLLECT_PUBLICITY,
    "catalogue.revise_entry": _COLLECT_PUBLICITY,
    "catalogue.submit_entry": _COLLECT_PUBLICITY,
    "catalogue.return_entry": _REVIEW_PUBLICITY,
    "catalogue.publish_entry": _REVIEW_PUBLICITY,
    "catalogue.apply_revision": _REVIEW_PUBLICITY,
    "catalogue.withdraw_entry": _REVIEW_PUBLICITY,
    # Archive packages (JL-18), statistics (JL-21) and case-file review (JL-22), docs/archives.md.
    # Sealing is the agency's archive duty (legal reviewer, head); reading reaches the supervisors.
    "archives.create_archive": ("legal_reviewer", "agency_head", "system_admin"),
    "archives.list_archives": _GOVERNANCE_READERS,
    "archives.download_archive": _GOVERNANCE_READERS,
    "archives.overdue": _GOVERNANCE_READERS,
    "statistics.get_statistics": _GOVERNANCE_READERS,
    "statistics.export_csv": _GOVERNANCE_READERS,
    "reviews.list_reviews": _READ_CASES,
    "reviews.create_review": ("legal_reviewer", "agency_head", "supervisor", "system_admin"),
    # Evidence governance (server/http/api/governance.py, docs/governance.md): JL-19 retention and
    # disposal, JL-20 access by duty and the head's approval. The services add the finer rules: only a
    # head of the evidence's agency who is not the requester decides; requests stay within one agency.
    "governance.list_requests": _REQUESTERS,
    "governance.create_request": _REQUESTERS,
    "governance.get_request": _REQUESTERS,
    "governance.decide_request": ("agency_head",),
    # JL-20: a grant is revoked early by a head (its approver, or another head of the agency).
    "governance.revoke_grant": ("agency_head",),
    "governance.list_grants": _REQUESTERS,
    # JL-20: the requester of an approved external provision (or the head) seals it and gets the link.
    "provision.create_export": _REQUESTERS,
    "governance.get_retention": _READ_EVIDENCE,
    "governance.assign_category": ("legal_reviewer", "agency_head"),
    "governance.set_access_class": ("agency_head",),
    # JL-19: an agency's own retention periods: its head sets them; its governance readers read them.
    "governance.list_retention_periods": _GOVERNANCE_READERS,
    "governance.set_retention_period": ("agency_head",),
    "governance.list_holds": _HOLDERS,
    "governance.place_hold": _HOLDERS,
    "governance.release_hold": ("agency_head", "supervisor", "auditor"),
    "governance.list_disposals": _HOLDERS,
}
