"""The saga-trace web viewer: a read-only local page over a tracker (``choreo ui``).

:class:`ViewerServer` serves the page, a JSON API (:mod:`choreo.viewer.api`) and live
updates as Server-Sent Events; see :mod:`choreo.viewer.web` for its security rules.
"""

from choreo.viewer.api import TraceApi, TrackerReader
from choreo.viewer.web import ViewerServer

__all__ = ["TraceApi", "TrackerReader", "ViewerServer"]
