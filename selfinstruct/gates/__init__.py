"""The gates a candidate passes: heuristic filters (each returns a rejection reason or ``None``), exact
ROUGE-L novelty, and the two commands built from them alone (``filter`` and ``seeds check``).

Where does a candidate get rejected for similarity? ``gates/novelty.py``.

May import: the pool's task record, errors.
"""
