"""The declared choreography: services, sagas and their handlers, and what is derived from them.

- :mod:`choreo.choreography.service`: :class:`~choreo.choreography.service.Service`,
  :class:`~choreo.choreography.service.Saga` and the handler decorators;
- :mod:`choreo.choreography.graph`: the event graph of a set of services and sagas;
- :mod:`choreo.choreography.checks`: :func:`~choreo.choreography.checks.check`, the
  graph's consistency checks (one code per kind of problem);
- :mod:`choreo.choreography.drawing`: the graph as Mermaid or Graphviz text;
- :mod:`choreo.choreography.asyncapi`: the graph and schemas as an AsyncAPI document;
- :mod:`choreo.choreography.discovery`: finding services and sagas by importing a target.

The public names are exported from :mod:`choreo`; import them from there.
"""
