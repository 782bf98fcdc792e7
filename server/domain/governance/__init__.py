"""Evidence governance (issue 11): the append-only evidence ledger; retention, approvals, archives next."""
