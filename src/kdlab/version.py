"""The package version, in a module of its own so that any module can read it without importing
the public API in ``kdlab/__init__.py`` (which imports nearly everything)."""

__version__ = "0.1.0"
