"""The example shop: five services choreographing the ``OrderFulfillment`` saga.

``order`` opens a saga per order, ``inventory`` reserves stock, ``payment`` charges,
``shipping`` prepares and dispatches the parcel (the pivot), and ``notification`` tells
the customer how it ended; each step has a compensation that really undoes it (see
:mod:`services.saga` for the whole flow). Every service keeps its own SQLite state and
can run in its own process (``choreo run services.payment:service``), or all five in one
(:func:`services.shop.build_shop`, ``choreo demo``). Failures are injected by
configuration (:mod:`services.config`), deterministically per order.
"""
