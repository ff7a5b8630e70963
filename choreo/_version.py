"""The single place that states choreo's version."""

__version__ = "0.1.0"
