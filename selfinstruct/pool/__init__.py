"""The pool directory, the only state there is: the directory itself (``directory``: :class:`Pool`, the one
door, composed of ``lock``, the single-writer lock, ``journal``, the append-only files with their fsync and
torn-line repair and the journal of accepted tasks, and ``ledger``, the ledger of runs), the one task record
(``task``), and the one reader of untrusted JSON text (``jsontext``).

May import: errors and stopping only.
"""
