"""The engine: runs jobs of a flow.

Modules: ``context`` (which job the current thread or asyncio task serves),
``timers`` (one timer thread for retries and routine timeouts), ``aio`` (the
engine's asyncio loop), ``pool`` (the flows' daemon worker threads),
``tasks`` (the unit of work and its saved form) and ``run`` (a running job:
its queue, outstanding count, error policy, timeouts and interrupts).
"""
