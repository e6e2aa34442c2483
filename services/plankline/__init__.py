"""Plankline: plankton video in, counted, measured and classified organisms out.

Imports point one way: ``cli``, ``batch``, ``stream`` -> ``outputs``, ``model``
-> ``imaging``. ``imaging`` imports nothing of ours.
"""

__version__ = "0.1.0"
