"""Feast repository: declarative definitions (``definitions.py``) and the embedded profile."""
