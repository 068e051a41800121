"""ResultExtractor: finds the useful result in LLM or interpreter output (JSON in a
fenced block, a JSON string, a code block, interpreter output items, ...)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Optional

from routilux.exceptions import ExpressionBudgetError
from routilux.serialization import register_serializable

from .._base import BuiltinRoutine

logger = logging.getLogger("routilux.builtin_routines.result_extractor")

_yaml: Any
try:  # PyYAML is optional (the routilux[yaml] extra)
    import yaml

    _yaml = yaml
except ImportError:  # pragma: no cover - depends on the environment
    _yaml = None

Extraction = Optional[tuple[Any, str, dict[str, Any]]]
Extractor = Callable[[Any, dict[str, Any]], Extraction]

STRATEGIES = ("auto", "priority", "first_match", "all")
_DEFAULT_LANGUAGES = ["json", "python", "output", "yaml", "xml"]


def _fenced_blocks(text: str, language: str) -> list[str]:
    """Bodies of the ```lang (or ```{lang}) blocks of ``text``, in order."""
    pattern = re.compile(
        r"```[ \t]*\{?" + re.escape(language) + r"\}?[ \t]*\r?\n(.*?)```",
        re.IGNORECASE | re.DOTALL,
    )
    return pattern.findall(text)


def extract_interpreter_output(data: Any, config: dict[str, Any]) -> Extraction:
    """Lists of interpreter items ``{"format": "output", "content": ...}`` -> their text."""
    if not config.get("format_interpreter_output", True) or not isinstance(data, list):
        return None
    if not any(isinstance(i, dict) and ("format" in i or "content" in i) for i in data):
        return None
    parts: list[str] = []
    for item in data:
        if isinstance(item, dict):
            content = item.get("content")
            if item.get("format") == "output" and content is not None and str(content).strip():
                parts.append(str(content))
        elif isinstance(item, str) and item.strip():
            parts.append(item)
    text = "\n".join(parts)
    return (
        text,
        "interpreter_output",
        {
            "extraction_method": "interpreter_output",
            "output_count": len(parts),
            "line_count": len(text.splitlines()),
        },
    )


def extract_json_code_block(data: Any, config: dict[str, Any]) -> Extraction:
    """The last ```json block that parses."""
    if not config.get("extract_json_blocks", True) or not isinstance(data, str):
        return None
    blocks = _fenced_blocks(data, "json")
    for index in range(len(blocks) - 1, -1, -1):
        try:
            result = json.loads(blocks[index])
        except ValueError:
            continue
        return (
            result,
            "json",
            {
                "extraction_method": "json_code_block",
                "block_count": len(blocks),
                "block_index": index,
            },
        )
    return None


def extract_json_string(data: Any, config: dict[str, Any]) -> Extraction:
    """A string that is itself a JSON object or array."""
    if not config.get("parse_json_strings", True) or not isinstance(data, str):
        return None
    text = data.strip()
    if len(text) <= 2 or text[0] not in "{[":
        return None
    try:
        result = json.loads(text)
    except ValueError:
        return None
    return result, "json", {"extraction_method": "json_string"}


def extract_yaml_code_block(data: Any, config: dict[str, Any]) -> Extraction:
    """The last ```yaml / ```yml block that parses (needs PyYAML)."""
    if _yaml is None or not config.get("extract_yaml_blocks", False):
        return None
    if not isinstance(data, str):
        return None
    blocks = _fenced_blocks(data, "yaml") or _fenced_blocks(data, "yml")
    for index in range(len(blocks) - 1, -1, -1):
        try:
            result = _yaml.safe_load(blocks[index])
        except _yaml.YAMLError:
            continue
        if result is not None:
            return (
                result,
                "yaml",
                {
                    "extraction_method": "yaml_code_block",
                    "block_count": len(blocks),
                    "block_index": index,
                },
            )
    return None


def extract_yaml_string(data: Any, config: dict[str, Any]) -> Extraction:
    """A string that parses as a YAML mapping or sequence (needs PyYAML)."""
    if _yaml is None or not config.get("parse_yaml_strings", False):
        return None
    if not isinstance(data, str) or not data.strip():
        return None
    try:
        result = _yaml.safe_load(data)
    except _yaml.YAMLError:
        return None
    if not isinstance(result, (dict, list)):
        return None
    return result, "yaml", {"extraction_method": "yaml_string"}


def extract_xml_code_block(data: Any, config: dict[str, Any]) -> Extraction:
    """The text of the last ```xml block."""
    if not config.get("extract_xml_blocks", False) or not isinstance(data, str):
        return None
    blocks = _fenced_blocks(data, "xml")
    if not blocks:
        return None
    return (
        blocks[-1].strip(),
        "xml",
        {
            "extraction_method": "xml_code_block",
            "block_count": len(blocks),
        },
    )


def extract_code_block(data: Any, config: dict[str, Any]) -> Extraction:
    """The last block of the first language of ``code_block_languages`` (json aside)."""
    if not config.get("extract_code_blocks", True) or not isinstance(data, str):
        return None
    for language in config.get("code_block_languages", _DEFAULT_LANGUAGES):
        if not isinstance(language, str) or language.lower() == "json":
            continue
        blocks = _fenced_blocks(data, language)
        if blocks:
            return (
                blocks[-1].strip(),
                language,
                {
                    "extraction_method": f"{language}_code_block",
                    "block_count": len(blocks),
                },
            )
    return None


def extract_dict(data: Any, config: dict[str, Any]) -> Extraction:
    """A dict is its own result."""
    if not isinstance(data, dict):
        return None
    return data, "dict", {"extraction_method": "direct", "key_count": len(data)}


def extract_list(data: Any, config: dict[str, Any]) -> Extraction:
    """A list is its own result."""
    if not isinstance(data, list):
        return None
    return data, "list", {"extraction_method": "direct", "item_count": len(data)}


_LEADING: list[tuple[str, Extractor]] = [
    ("interpreter_output", extract_interpreter_output),
    ("json_code_block", extract_json_code_block),
    ("json_string", extract_json_string),
]
_YAML: list[tuple[str, Extractor]] = [
    ("yaml_code_block", extract_yaml_code_block),
    ("yaml_string", extract_yaml_string),
]
_MIDDLE: list[tuple[str, Extractor]] = [
    ("xml_code_block", extract_xml_code_block),
    ("code_block", extract_code_block),
]
_TRAILING: list[tuple[str, Extractor]] = [
    ("dict_extractor", extract_dict),
    ("list_extractor", extract_list),
]


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (dict, list, tuple, set)):
        return len(value) == 0
    return False


def confidence_of(result: Any, fmt: str, metadata: dict[str, Any]) -> float:
    """0.5, +0.2 for a dict/list, +0.1 for a code block, +0.1 for JSON/YAML, -0.3 if empty."""
    score = 0.5
    if isinstance(result, (dict, list)):
        score += 0.2
    if "code_block" in str(metadata.get("extraction_method", "")):
        score += 0.1
    if fmt in ("json", "yaml"):
        score += 0.1
    if _is_empty(result):
        score -= 0.3
    return round(min(1.0, max(0.0, score)), 10)


@register_serializable
class ResultExtractor(BuiltinRoutine):
    """Extract a structured result from text, interpreter output or plain data.

    Slot ``input``; event ``output`` with ``extracted_result``, ``format``,
    ``metadata``, ``confidence`` and ``extraction_path``. Custom extractors added with
    :meth:`register_extractor` live in the ``custom_extractors`` config key.
    """

    config_schema = {
        "strategy": str,
        "extractor_priority": list,
        "extract_json_blocks": bool,
        "extract_code_blocks": bool,
        "extract_yaml_blocks": bool,
        "extract_xml_blocks": bool,
        "code_block_languages": list,
        "format_interpreter_output": bool,
        "parse_json_strings": bool,
        "parse_yaml_strings": bool,
        "detect_nested_structures": bool,
        "continue_on_error": bool,
        "return_original_on_failure": bool,
        "log_errors": bool,
        "custom_extractors": dict,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event(
            "output",
            ["extracted_result", "format", "metadata", "confidence", "extraction_path"],
        )
        self.set_config(
            strategy="auto",
            extractor_priority=[],
            extract_json_blocks=True,
            extract_code_blocks=True,
            extract_yaml_blocks=False,
            extract_xml_blocks=False,
            code_block_languages=list(_DEFAULT_LANGUAGES),
            format_interpreter_output=True,
            parse_json_strings=True,
            parse_yaml_strings=False,
            detect_nested_structures=True,
            continue_on_error=True,
            return_original_on_failure=True,
            log_errors=True,
            custom_extractors={},
        )

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "strategy":
            self._require_choice(key, value, STRATEGIES)
        elif key in ("extractor_priority", "code_block_languages"):
            if not all(isinstance(v, str) for v in value):
                raise self._config_error(key, "must be a list of strings")
        elif key == "custom_extractors":
            for name, fn in value.items():
                if not isinstance(name, str) or not callable(fn):
                    raise self._config_error(key, "must map names (str) to callables")

    def register_extractor(self, name: str, extractor: Extractor) -> None:
        """Add or replace the custom extractor ``name``: ``f(data, config) -> None |
        (result, format, metadata)``."""
        if not callable(extractor):
            raise self._config_error("custom_extractors", f"entry '{name}' must be callable")
        custom = dict(self.get_config("custom_extractors") or {})
        custom[name] = extractor
        self.set_config(custom_extractors=custom)

    def extractors(self) -> list[tuple[str, Extractor]]:
        """The extractors in the order they are tried."""
        custom = list((self.get_config("custom_extractors") or {}).items())
        ordered = [*_LEADING, *(_YAML if _yaml is not None else []), *_MIDDLE, *custom, *_TRAILING]
        priority = list(self.get_config("extractor_priority") or [])
        if priority:
            rank = {name: i for i, name in enumerate(priority)}
            ordered.sort(key=lambda pair: rank.get(pair[0], len(rank)))
        return ordered

    def _handle_input(self, data: Any = None, **kwargs: Any) -> None:
        value = self._extract_input_data(data, **kwargs)
        if isinstance(value, dict) and not value:
            value = ""
        self.emit("output", **self.extract(value))

    def extract(self, data: Any) -> dict[str, Any]:
        """The keyword arguments of the ``output`` emission for ``data``."""
        config = self.config()
        strategy = config.get("strategy", "auto")
        errors: list[dict[str, str]] = []
        found: list[tuple[str, Any, str, dict[str, Any]]] = []
        for name, extractor in self.extractors():
            try:
                outcome = extractor(data, config)
                if outcome is not None:
                    result, fmt, metadata = outcome
            except ExpressionBudgetError as exc:  # a restored lambda over budget: fail
                raise self._expression_failure(exc, f"extractor '{name}'") from None
            except Exception as exc:  # noqa: BLE001 - recorded, policy decides
                message = f"Extractor '{name}' failed: {exc}"
                errors.append({"extractor": name, "error": message})
                if config.get("log_errors", True):
                    logger.warning("%r: %s", self, message)
                if not config.get("continue_on_error", True):
                    break
                continue
            if outcome is None:
                continue
            found.append((name, result, fmt, dict(metadata or {})))
            if strategy != "all":
                break
        if not found:
            if not config.get("return_original_on_failure", True):
                details = "; ".join(e["error"] for e in errors) or "no extractor matched"
                raise ValueError(f"All extractors failed. {details}")
            return {
                "extracted_result": data,
                "format": type(data).__name__.lower(),
                "metadata": {
                    "extraction_method": "none",
                    "errors": errors,
                    "original_type": type(data).__name__,
                },
                "confidence": 0.0,
                "extraction_path": [],
            }
        if strategy == "all":
            extractions = [
                {
                    "extractor": name,
                    "result": result,
                    "format": fmt,
                    "metadata": metadata,
                    "confidence": confidence_of(result, fmt, metadata),
                }
                for name, result, fmt, metadata in found
            ]
            return {
                "extracted_result": [e["result"] for e in extractions],
                "format": "multi",
                "metadata": {
                    "extractions": extractions,
                    "count": len(extractions),
                    "errors": errors,
                },
                "confidence": max(e["confidence"] for e in extractions),
                "extraction_path": [e["extractor"] for e in extractions],
            }
        name, result, fmt, metadata = found[0]
        metadata["extractor"] = name
        metadata["strategy"] = strategy
        if errors:
            metadata["errors"] = errors
        return {
            "extracted_result": result,
            "format": fmt,
            "metadata": metadata,
            "confidence": confidence_of(result, fmt, metadata),
            "extraction_path": [name],
        }
