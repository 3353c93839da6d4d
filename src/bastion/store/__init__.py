"""The embedded store: SQLAlchemy over SQLite by default, PostgreSQL by URL, with versioned migrations.

Import :mod:`bastion.store.database` to open a store and :mod:`bastion.store.events` for the event log;
this package itself stays light so that ``bastion --help`` does not import SQLAlchemy.
"""
