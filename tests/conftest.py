"""Shared pytest set-up for the Routilux test suite.

Hypothesis runs without per-example deadlines: machines here are shared and
noisy, and the engine's tests measure behaviour, never speed.
"""

from hypothesis import settings

settings.register_profile("routilux", deadline=None, print_blob=True)
settings.load_profile("routilux")
