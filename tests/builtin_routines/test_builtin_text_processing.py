"""TextClipper, TextRenderer and ResultExtractor, used standalone (spec 80)."""

from __future__ import annotations

import pytest

from routilux.builtin_routines.text_processing import ResultExtractor, TextClipper, TextRenderer


class TestTextClipper:
    def test_spec_example(self, capture):
        clipper = TextClipper()
        clipper.set_config(max_length=12)
        out = capture(clipper)
        clipper.input_slot.receive({"text": "line1\nline2\nline3\nline4"})
        assert out.last() == {
            "clipped_text": "line1\n...(省略了3行)",
            "was_clipped": True,
            "original_length": 23,
        }

    def test_short_text_unchanged(self, capture):
        clipper = TextClipper()
        out = capture(clipper)
        clipper.input_slot.receive({"text": "short"})
        assert out.last() == {"clipped_text": "short", "was_clipped": False, "original_length": 5}

    def test_traceback_preserved(self, capture):
        clipper = TextClipper()
        clipper.set_config(max_length=5)
        out = capture(clipper)
        text = "Traceback (most recent call last):\n  File x\nValueError"
        clipper.input_slot.receive({"text": text})
        assert out.last()["clipped_text"] == text
        assert out.last()["was_clipped"] is False

    def test_traceback_clipped_when_not_preserved(self, capture):
        clipper = TextClipper()
        clipper.set_config(max_length=5, preserve_tracebacks=False)
        out = capture(clipper)
        clipper.input_slot.receive({"text": "Traceback\n" + "x" * 50})
        assert out.last()["was_clipped"] is True

    def test_data_key_is_accepted(self, capture):
        clipper = TextClipper()
        out = capture(clipper)
        clipper.input_slot.receive({"data": "hello"})
        assert out.last()["clipped_text"] == "hello"

    def test_dict_input_prefers_text_keys(self, capture):
        clipper = TextClipper()
        out = capture(clipper)
        clipper.input_slot.receive({"data": {"n": 1, "message": "msg", "content": "c"}})
        assert out.last()["clipped_text"] == "c"
        clipper.input_slot.receive({"data": {"n": 1, "other": "first str"}})
        assert out.last()["clipped_text"] == "first str"
        clipper.input_slot.receive({"data": {"n": 1}})
        assert out.last()["clipped_text"] == "{'n': 1}"

    def test_non_string_input(self, capture):
        clipper = TextClipper()
        out = capture(clipper)
        clipper.input_slot.receive({"data": 12345})
        assert out.last()["clipped_text"] == "12345"

    def test_max_length_argument_overrides_config(self, capture):
        clipper = TextClipper()
        out = capture(clipper)
        clipper.input_slot.receive({"text": "aaaa\nbbbb\ncccc", "max_length": 8})
        assert out.last()["clipped_text"] == "aaaa\n...(省略了2行)"

    def test_custom_truncation_message(self, capture):
        clipper = TextClipper()
        clipper.set_config(max_length=8, truncation_message="[{remaining} more]")
        out = capture(clipper)
        clipper.input_slot.receive({"text": "aaaa\nbbbb\ncccc"})
        assert out.last()["clipped_text"] == "aaaa\n[2 more]"


class TestTextRenderer:
    def test_spec_example_xml(self, capture):
        renderer = TextRenderer()
        out = capture(renderer)
        renderer.input_slot.receive({"data": {"a": {"b": 1}, "l": [1, 2]}})
        assert out.last() == {
            "rendered_text": "<a>  <b>1</b></a>\n<l>  <item_0>1</item_0>\n  <item_1>2</item_1></l>",
            "original_type": "dict",
        }

    def test_markdown(self, capture):
        renderer = TextRenderer()
        renderer.set_config(tag_format="markdown")
        out = capture(renderer)
        renderer.input_slot.receive({"data": {"a": [1, 2]}})
        assert out.last()["rendered_text"] == "**a**:   - 1\n  - 2"

    def test_scalars_and_empty_containers(self):
        renderer = TextRenderer()
        assert renderer.render(5) == "5"
        assert renderer.render({}) == ""
        assert renderer.render([]) == ""

    def test_circular_reference(self):
        data: dict = {"a": 1}
        data["self"] = data
        assert TextRenderer().render(data) == "<a>1</a>\n<self>[Circular Reference]</self>"

    def test_shared_but_not_circular(self):
        shared = [1]
        assert "Circular" not in TextRenderer().render({"x": shared, "y": shared})


class TestResultExtractor:
    def test_spec_example(self, capture):
        extractor = ResultExtractor()
        out = capture(extractor)
        extractor.input_slot.receive({"data": 'text ```json\n{"a":1}\n``` end'})
        result = out.last()
        assert result["extracted_result"] == {"a": 1}
        assert result["format"] == "json"
        assert result["confidence"] == pytest.approx(0.9)
        assert result["extraction_path"] == ["json_code_block"]
        assert result["metadata"]["extractor"] == "json_code_block"
        assert result["metadata"]["strategy"] == "auto"
        assert result["metadata"]["block_count"] == 1

    def test_last_parsable_json_block_wins(self):
        text = '```json\n{"a":1}\n```\n```JSON\n{"b":2}\n```\n```json\nnot json\n```'
        result = ResultExtractor().extract(text)
        assert result["extracted_result"] == {"b": 2}
        assert result["metadata"]["block_index"] == 1

    def test_json_string(self):
        result = ResultExtractor().extract(" [1, 2, 3] ")
        assert result["extracted_result"] == [1, 2, 3]
        assert result["format"] == "json"
        assert result["extraction_path"] == ["json_string"]

    def test_interpreter_output(self):
        data = [
            {"format": "output", "content": "line 1"},
            {"format": "code", "content": "print(1)"},
            {"format": "output", "content": "   "},
            "line 2",
        ]
        result = ResultExtractor().extract(data)
        assert result["extracted_result"] == "line 1\nline 2"
        assert result["format"] == "interpreter_output"
        assert result["metadata"]["output_count"] == 2
        assert result["metadata"]["line_count"] == 2

    def test_code_block(self):
        result = ResultExtractor().extract("```python\nprint('hi')\n```")
        assert result["extracted_result"] == "print('hi')"
        assert result["format"] == "python"
        assert result["metadata"]["extraction_method"] == "python_code_block"
        assert result["confidence"] == pytest.approx(0.6)

    def test_dict_and_list_direct(self):
        result = ResultExtractor().extract({"k": 1})
        assert (result["format"], result["metadata"]["key_count"]) == ("dict", 1)
        assert result["confidence"] == pytest.approx(0.7)
        result = ResultExtractor().extract([1, 2])
        assert (result["format"], result["metadata"]["item_count"]) == ("list", 2)

    def test_empty_input_is_empty_string(self, capture):
        extractor = ResultExtractor()
        out = capture(extractor)
        extractor.input_slot.receive({})
        assert out.last()["extracted_result"] == ""
        assert out.last()["format"] == "str"
        assert out.last()["confidence"] == 0.0

    def test_nothing_matched_returns_original(self):
        result = ResultExtractor().extract("plain words")
        assert result == {
            "extracted_result": "plain words",
            "format": "str",
            "metadata": {"extraction_method": "none", "errors": [], "original_type": "str"},
            "confidence": 0.0,
            "extraction_path": [],
        }

    def test_nothing_matched_raises_when_asked(self):
        extractor = ResultExtractor()
        extractor.set_config(return_original_on_failure=False)
        with pytest.raises(ValueError, match="All extractors failed"):
            extractor.extract("plain words")

    def test_strategy_all(self):
        extractor = ResultExtractor()
        extractor.set_config(strategy="all")
        result = extractor.extract('```json\n{"a": 1}\n```\n```python\nx = 1\n```')
        assert result["format"] == "multi"
        assert result["extracted_result"] == [{"a": 1}, "x = 1"]
        assert result["extraction_path"] == ["json_code_block", "code_block"]
        assert result["metadata"]["count"] == 2
        assert result["confidence"] == pytest.approx(0.9)

    def test_failing_custom_extractor_recorded(self):
        extractor = ResultExtractor()

        def broken(data, config):
            raise RuntimeError("nope")

        extractor.register_extractor("broken", broken)
        result = extractor.extract({"k": 1})
        assert result["metadata"]["errors"] == [
            {"extractor": "broken", "error": "Extractor 'broken' failed: nope"}
        ]
        assert result["format"] == "dict"

    def test_stop_on_error(self):
        extractor = ResultExtractor()
        extractor.set_config(continue_on_error=False)
        extractor.register_extractor("broken", lambda data, config: 1 / 0)
        result = extractor.extract({"k": 1})
        assert result["metadata"]["extraction_method"] == "none"
        assert result["metadata"]["errors"][0]["extractor"] == "broken"

    def test_custom_extractor_and_priority(self):
        extractor = ResultExtractor()
        extractor.register_extractor("upper", lambda data, config: (str(data).upper(), "up", {}))
        extractor.set_config(extractor_priority=["upper"])
        result = extractor.extract('{"a": 1}')
        assert result["extracted_result"] == '{"A": 1}'
        assert result["extraction_path"] == ["upper"]

    def test_yaml_blocks_when_enabled(self):
        pytest.importorskip("yaml")
        extractor = ResultExtractor()
        extractor.set_config(extract_yaml_blocks=True)
        result = extractor.extract("```yaml\na: 1\nb: [2]\n```")
        assert result["extracted_result"] == {"a": 1, "b": [2]}
        assert result["format"] == "yaml"

    def test_xml_blocks_when_enabled(self):
        extractor = ResultExtractor()
        extractor.set_config(extract_xml_blocks=True, code_block_languages=["python"])
        result = extractor.extract("```xml\n<a/>\n```")
        assert (result["extracted_result"], result["format"]) == ("<a/>", "xml")
