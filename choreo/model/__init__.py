"""The data model every layer shares: events, their envelope, topic names, a handler's context.

- :mod:`choreo.model.events`: :class:`~choreo.model.events.Event`, the base of every
  event class, and the Avro-record rules an event class must follow;
- :mod:`choreo.model.envelope`: the :class:`~choreo.model.envelope.Envelope` (ids,
  roles and timestamps) framed into every record's headers;
- :mod:`choreo.model.topics`: which topic carries an event type, and each service's
  dead-letter topic (the default names and the naming callables that override them);
- :mod:`choreo.model.context`: the :class:`~choreo.model.context.Context` a handler gets.

The public names are exported from :mod:`choreo`; import them from there.
"""
