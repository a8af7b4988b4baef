"""The loop: one request's life and many at once (``bootstrap``), with its limits (``budget``) and its
counting for the people watching (``reporting``) apart, its stages as plain functions of text (``stages``),
one ``generate`` run against a pool directory (``runner``: lock, load, identity, ledger), and the ``judge``
command's loop (``judging``).

May import: the config, the protocol, the gates, the engines, the pool, errors and stopping. Never the CLI,
never the views.
"""
