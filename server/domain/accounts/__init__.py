"""Accounts: users, roles, passwords, the login throttle and tokens."""
