"""The credential scan log cannot be rewritten or deleted: migration 0007's triggers (GS-10(1), JL-6)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from server.domain.people import credentials as credential_service
from server.domain.people.credentials import CredentialCheck
from server.domain.people.models import CredentialScan


def test_gs10_scan_log_is_append_only_in_the_database(db_session: Session) -> None:
    check = CredentialCheck(outcome="not_found")
    credential_service.log_scan(db_session, check, method="cert", user_agent="curl/8", client_ip="10.1.2.3")
    credential_service.log_scan(db_session, check, method="cert", user_agent="curl/8", client_ip="10.1.2.4")
    db_session.commit()
    for statement in (
        "UPDATE credential_scans SET outcome = 'valid'",
        "UPDATE credential_scans SET ip_prefix = NULL",
        "DELETE FROM credential_scans",
    ):
        with pytest.raises(DatabaseError, match="append-only"):
            db_session.execute(text(statement))
        db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(CredentialScan)) == 2
    assert set(db_session.scalars(select(CredentialScan.outcome))) == {"not_found"}
