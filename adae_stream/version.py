"""The package version, in a module of its own so that any module can name it without importing the package's
lazy public API (adae_stream/__init__.py), which would make an import cycle."""

__version__ = "0.1.0"
