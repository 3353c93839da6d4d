"""Alembic migration scripts of the store (run in-process by :mod:`bastion.store.migrate`)."""
