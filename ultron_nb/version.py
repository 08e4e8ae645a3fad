"""The version of ultron_nb (one place; the package and the server read it)."""

__version__ = "0.1.0"
