"""The package version, on the lowest floor (the exporters record it without importing the package root)."""

__version__ = "0.1.0"
