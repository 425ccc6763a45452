"""Helpers and fixtures that a package's unit tests and its integration tests share (imported as
``support.<name>``: tests/ is on sys.path through tests/conftest.py)."""
