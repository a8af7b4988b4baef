"""The protocol with the model: what we say to it (templates for Self-Instruct, chat, Alpaca and the judge)
and how we read what it answers. Pure functions of text; nothing here schedules, sends or writes.

May import: the engines' prompt shapes (``selfinstruct.engines.chat``), the pool's task record, errors.
"""
