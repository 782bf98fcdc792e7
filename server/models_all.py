"""One import for the complete ORM metadata: ``Base`` with every ``server.models*`` table mapped.

Alembic's ``migrations/env.py`` autogenerates against ``Base.metadata`` imported from here, so a
model module that is not imported below is a table autogenerate would want to drop. A test runs
``alembic check`` on a migrated database (SQLite and PostgreSQL) and expects no difference.
"""

from __future__ import annotations

# Imported for their side effect: each module maps its tables onto Base.metadata.
import server.domain.governance.models
import server.models_fleet
import server.models_people
import server.models_rollouts
import server.models_sessions
import server.models_telemetry
from server.models import Base

__all__ = ["Base"]

MODEL_MODULES = (
    server.domain.governance.models,
    server.models_fleet,
    server.models_people,
    server.models_rollouts,
    server.models_sessions,
    server.models_telemetry,
)
