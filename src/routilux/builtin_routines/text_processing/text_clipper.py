"""TextClipper: shortens long text to whole leading lines, leaving tracebacks intact."""

from __future__ import annotations

from typing import Any

from routilux.serialization import register_serializable

from .._base import MAX_TEXT_LENGTH, BuiltinRoutine

_TEXT_KEYS = ("text", "content", "message", "data")


@register_serializable
class TextClipper(BuiltinRoutine):
    """Clip text to ``max_length`` characters, keeping whole leading lines.

    Slot ``input``; event ``output`` with ``clipped_text``, ``was_clipped`` and
    ``original_length``. A ``max_length`` key in the delivery overrides the config.
    """

    config_schema = {
        "max_length": int,
        "preserve_tracebacks": bool,
        "truncation_message": str,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event(
            "output", ["clipped_text", "was_clipped", "original_length"]
        )
        self.set_config(
            max_length=1000,
            preserve_tracebacks=True,
            truncation_message="...(省略了{remaining}行)",
        )

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "max_length":
            self._require_range(key, value, 0, MAX_TEXT_LENGTH)

    def _handle_input(self, text: Any = None, max_length: Any = None, **kwargs: Any) -> None:
        # `data` arrives inside kwargs here: passing it on positionally would collide.
        value = text if text is not None else self._extract_input_data(**kwargs)
        text_value = _as_text(value)
        limit = max_length if isinstance(max_length, int) else self.get_config("max_length", 1000)
        clipped, was_clipped = self.clip(text_value, limit)
        self.emit(
            "output",
            clipped_text=clipped,
            was_clipped=was_clipped,
            original_length=len(text_value),
        )

    def clip(self, text: str, limit: int) -> tuple[str, bool]:
        """``(result, was_clipped)`` for ``text`` under ``limit`` characters."""
        if self.get_config("preserve_tracebacks", True) and "Traceback" in text:
            return text, False
        if len(text) <= limit:
            return text, False
        lines = text.split("\n")
        kept: list[str] = []
        kept_chars = 0
        for line in lines:
            if kept_chars + len(line) + 1 < limit:
                kept.append(line)
                kept_chars += len(line) + 1
            else:
                break
        message = str(self.get_config("truncation_message", "...(省略了{remaining}行)"))
        try:
            tail = message.format(remaining=len(lines) - len(kept))
        except (KeyError, IndexError, ValueError):
            tail = message
        return "\n".join(kept) + "\n" + tail, True


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in _TEXT_KEYS:
            if isinstance(value.get(key), str):
                return str(value[key])
        for item in value.values():
            if isinstance(item, str):
                return item
        return str(value)
    return str(value)
