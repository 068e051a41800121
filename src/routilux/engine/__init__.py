"""The engine: runs jobs of a flow.

Modules: ``run`` (a running job: its queue, outstanding count and settling,
interrupts), ``plan`` (the compiled, read-only routing a job runs
and the delivery rules), ``tasks`` (the unit of work, its job-wide number and
its saved form), ``executors`` (inline, thread pool, asyncio: where a job's
steps run), ``failure`` (the failure policy in action), ``scheduling`` (a job's
timers and at-job-end deliveries), ``timeouts`` (bounding a handler by its
timeout), ``observer`` (the task observer protocol),
``context`` (which job the current thread or asyncio task serves), ``timers``
(one timer thread for retries and timeouts), ``aio`` (the engine's asyncio
loop) and ``pool`` (the flows' daemon worker threads).
"""
