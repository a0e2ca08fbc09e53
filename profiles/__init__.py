"""The record store: settings, SQLModel tables, sessions, migrations and profile import/export.

Importing this package touches no database and loads no model.
"""
