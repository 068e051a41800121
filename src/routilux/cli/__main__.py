"""``python -m routilux.cli``: the same as the ``routilux`` command."""

from __future__ import annotations

from .app import main

main()
