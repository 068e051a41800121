"""The engine: runs jobs of a flow.

Modules: ``context`` (which job the current thread or asyncio task serves),
``timers`` (one timer thread for retries and routine timeouts), ``aio`` (the
engine's asyncio loop), ``tasks`` (the unit of work and its saved form) and
``run`` (a running job: its queue, outstanding count and error policy).
"""
