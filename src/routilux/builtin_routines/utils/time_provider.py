"""TimeProvider: emits the current time in several formats when asked."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from routilux.serialization import register_serializable

from .._base import BuiltinRoutine

_ZH_WEEKDAYS = "一二三四五六日"


@register_serializable
class TimeProvider(BuiltinRoutine):
    """Emit the time on ``output`` whenever the ``request`` slot receives anything.

    The slot is named ``request`` (attribute ``trigger_slot``); a ``trigger`` slot with
    the same handler lets a TimeProvider start a job. A ``format`` key in the
    delivery (``iso``, ``formatted``, ``timestamp`` or ``custom``) overrides the config.
    """

    config_schema = {
        "format": str,
        "custom_format": str,
        "include_weekday": bool,
        "locale": str,
    }

    def __init__(self) -> None:
        super().__init__()
        self.trigger_slot = self._define_input(self._handle_request, "request")
        self.output_event = self.define_event(
            "output", ["time_string", "timestamp", "datetime", "formatted"]
        )
        self.set_config(
            format="iso",
            custom_format="%Y-%m-%d %H:%M:%S",
            include_weekday=True,
            locale="zh_CN",
        )

    def _handle_request(self, data: Any = None, **kwargs: Any) -> None:
        fmt = kwargs.get("format")
        if isinstance(data, dict) and isinstance(data.get("format"), str):
            fmt = data["format"]
        if not isinstance(fmt, str):
            fmt = self.get_config("format", "iso")
        now = datetime.now()
        custom = str(self.get_config("custom_format", "%Y-%m-%d %H:%M:%S"))
        self.emit(
            "output",
            time_string=self.format_time(now, fmt),
            timestamp=time.time(),
            datetime=now.isoformat(),
            formatted=now.strftime(custom),
        )

    def format_time(self, now: datetime, fmt: str) -> str:
        """``now`` rendered in the format ``fmt`` (unknown formats give ISO)."""
        if fmt == "timestamp":
            return str(now.timestamp())
        if fmt == "custom":
            return now.strftime(str(self.get_config("custom_format", "%Y-%m-%d %H:%M:%S")))
        if fmt == "formatted":
            weekday = bool(self.get_config("include_weekday", True))
            if weekday and self.get_config("locale") == "zh_CN":
                return (
                    f"{now.year:04d}年{now.month:02d}月{now.day:02d}日，"
                    f"星期{_ZH_WEEKDAYS[now.weekday()]}，"
                    f"{now.hour:02d}:{now.minute:02d}:{now.second:02d}"
                )
            if weekday:
                return now.strftime("%A, %B %d, %Y %H:%M:%S")
            return now.strftime("%Y-%m-%d %H:%M:%S")
        return now.isoformat()
