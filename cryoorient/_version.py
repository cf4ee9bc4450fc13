"""The package version, in a module of its own so that package modules import it without a cycle."""

__version__ = "0.1.0"
