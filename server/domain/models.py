"""One import for the complete ORM metadata: ``Base`` with every domain's tables mapped.

Alembic's ``migrations/env.py`` autogenerates against ``Base.metadata`` imported from here, so a
model module that is not imported below is a table autogenerate would want to drop. A test runs
``alembic check`` on a migrated database (SQLite and PostgreSQL) and expects no difference.
"""

from __future__ import annotations

# Imported for their side effect: each module maps its tables onto Base.metadata.
import server.domain.accounts.models
import server.domain.audit
import server.domain.cases.models
import server.domain.evidence.models
import server.domain.fleet.models
import server.domain.fleet.rollout_models
import server.domain.fleet.telemetry_models
import server.domain.governance.access_models
import server.domain.governance.approvals_models
import server.domain.governance.archives_models
import server.domain.governance.lock_job_models
import server.domain.governance.models
import server.domain.governance.retention_models
import server.domain.leases
import server.domain.people.models
import server.domain.publicity.models
import server.domain.sessions.models
from server.domain.base import Base

__all__ = ["Base"]

MODEL_MODULES = (
    server.domain.accounts.models,
    server.domain.audit,
    server.domain.cases.models,
    server.domain.evidence.models,
    server.domain.fleet.models,
    server.domain.fleet.rollout_models,
    server.domain.fleet.telemetry_models,
    server.domain.governance.archives_models,
    server.domain.governance.access_models,
    server.domain.governance.approvals_models,
    server.domain.governance.lock_job_models,
    server.domain.governance.models,
    server.domain.governance.retention_models,
    server.domain.leases,
    server.domain.people.models,
    server.domain.publicity.models,
    server.domain.sessions.models,
)
