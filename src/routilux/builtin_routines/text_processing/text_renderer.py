"""TextRenderer: renders nested dicts and lists as XML-like tags or Markdown."""

from __future__ import annotations

from typing import Any

from routilux.serialization import register_serializable

from .._base import BuiltinRoutine

CIRCULAR = "[Circular Reference]"


@register_serializable
class TextRenderer(BuiltinRoutine):
    """Render a value as text: ``{"a": 1}`` -> ``<a>1</a>`` (or ``**a**: 1``).

    Slot ``input``; event ``output`` with ``rendered_text`` and ``original_type``.
    """

    config_schema = {
        "tag_format": str,
        "indent": str,
        "include_type_hints": bool,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event("output", ["rendered_text", "original_type"])
        self.set_config(tag_format="xml", indent="  ", include_type_hints=False)

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "tag_format":
            self._require_choice(key, value, ("xml", "markdown"))

    def _handle_input(self, data: Any = None, **kwargs: Any) -> None:
        value = self._extract_input_data(data, **kwargs)
        self.emit("output", rendered_text=self.render(value), original_type=type(value).__name__)

    def render(self, value: Any, level: int = 0) -> str:
        """The text for ``value`` at nesting ``level``."""
        return self._render(value, level, set())

    def _render(self, value: Any, level: int, path: set[int]) -> str:
        if not isinstance(value, (dict, list)):
            return str(value)
        if id(value) in path:
            return CIRCULAR
        path.add(id(value))
        try:
            pad = str(self.get_config("indent", "  ")) * level
            markdown = self.get_config("tag_format", "xml") == "markdown"
            lines: list[str] = []
            if isinstance(value, dict):
                for key, item in value.items():
                    inner = self._render(item, level + 1, path)
                    lines.append(
                        f"{pad}**{key}**: {inner}" if markdown else f"{pad}<{key}>{inner}</{key}>"
                    )
            else:
                for index, item in enumerate(value):
                    inner = self._render(item, level + 1, path)
                    lines.append(
                        f"{pad}- {inner}"
                        if markdown
                        else f"{pad}<item_{index}>{inner}</item_{index}>"
                    )
            return "\n".join(lines)
        finally:
            path.discard(id(value))
