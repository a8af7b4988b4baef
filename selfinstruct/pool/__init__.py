"""The pool directory, the only state there is: the directory itself (``directory``: lock, journal of
accepted tasks, ledger of runs), the one task record (``task``), and the one reader of untrusted JSON text
(``jsontext``).

May import: errors and stopping only.
"""
