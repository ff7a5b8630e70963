"""The application object: run services with one line, in-process or on Kafka.

:class:`App` takes the services and the schemas directory and builds the rest (serde,
stores, workers, publishers, a live tracker); :meth:`App.in_memory` and
:meth:`App.on_kafka` return an :class:`AppRun`, :meth:`App.run` serves until a signal.
See :mod:`choreo.app.app` for the stores' defaults and what survives.
"""

from choreo.app.app import BOOTSTRAP_ENV, App
from choreo.app.parts import StoreFactory
from choreo.app.running import AppRun

__all__ = ["BOOTSTRAP_ENV", "App", "AppRun", "StoreFactory"]
