"""Helpers of the web UI tests: the skip when the extra is missing, the test client,
the live server's record and the reader of Server-Sent Event streams.

The API tests use Starlette's TestClient (no socket). The stream tests need a real
server, since a test client reads a whole response before it returns (see the
``live_server`` fixture in ``conftest.py``); :class:`EventReader` reads a stream on a
thread of its own into a queue, so a test waits for the events it expects with a
bound, never for time.
"""

from __future__ import annotations

import json
import queue
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import pytest

#: Seconds any wait for an expected event may take (a bound, not a pace).
WAIT = 30.0


def needs_ui() -> None:
    pytest.importorskip("starlette", reason="the web UI tests need routilux[ui] (starlette)")
    pytest.importorskip("uvicorn", reason="the web UI tests need routilux[ui] (uvicorn)")
    pytest.importorskip("httpx", reason="the web UI tests need httpx (the dev extra)")


def origin(base: str = "http://127.0.0.1:8321") -> dict[str, str]:
    """The header a same-origin POST carries."""
    return {"Origin": base}


def make_client(app: Any, base: str = "http://127.0.0.1:8321") -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note about httpx versions
        from starlette.testclient import TestClient

        return TestClient(app, base_url=base)


@dataclass
class Live:
    """A running UI server: its base URL, its app and its server object."""

    base: str
    app: Any
    server: Any


@dataclass
class Event:
    name: str
    data: Any
    id: Optional[str]


class EventReader:
    """Reads one SSE stream on a thread into a queue of :class:`Event`."""

    def __init__(self, url: str, headers: Optional[dict[str, str]] = None) -> None:
        import httpx

        self.events: queue.Queue[Optional[Event]] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(WAIT, read=None))
        self._response = self._client.send(
            self._client.build_request("GET", url, headers=headers or {}), stream=True
        )
        self.status_code = self._response.status_code
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name, data, event_id = "message", [], None
        try:
            for line in self._response.iter_lines():
                if line == "":
                    if data:
                        self.events.put(Event(name, json.loads("\n".join(data)), event_id))
                    name, data, event_id = "message", [], None
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)
                    elif field == "id":
                        event_id = value
        except Exception:
            pass  # closed by the test or the server
        finally:
            self.events.put(None)

    def next(self, name: Optional[str] = None, timeout: float = WAIT) -> Event:
        """The next event (named ``name``, skipping others)."""
        while True:
            event = self.events.get(timeout=timeout)
            assert event is not None, "the stream ended"
            if name is None or event.name == name:
                return event

    def until(self, predicate: Any, timeout: float = WAIT) -> list[Event]:
        """Every event up to and including the first one ``predicate`` accepts."""
        seen = []
        while True:
            event = self.events.get(timeout=timeout)
            assert event is not None, f"the stream ended; saw {[(e.name, e.id) for e in seen]}"
            seen.append(event)
            if predicate(event):
                return seen

    def ended(self, timeout: float = WAIT) -> bool:
        """Whether the stream ends (the server closes it) within ``timeout``."""
        while True:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                return False
            if event is None:
                return True

    def close(self) -> None:
        self._response.close()
        self._client.close()
        self._thread.join(timeout=WAIT)
