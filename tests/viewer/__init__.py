"""Tests of the saga-trace web viewer and ``choreo ui``."""
