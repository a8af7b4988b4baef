"""Views of a pool: what ``status`` and ``report`` measure and draw (HTML, SVG, verb-noun structure,
embeddings), and ``export`` to the formats trainers load. They read a pool and never write into it.

May import: the config, the protocol (to read judgements), the gates (exact ROUGE-L to the seeds), the pool,
errors.
"""
