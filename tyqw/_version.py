"""The package version, in a module of its own so that nothing imports back up into
``tyqw/__init__.py`` to read it."""

__version__ = "0.2.0.dev0"
