"""People: agencies, officers and auxiliary staff, and their credentials (GS-9, GS-10)."""
