"""The Jinja chat template renderer (inference/templates.py): what it probes of a template and what
it hands it. The whole of it is checked against llama-server in tests/integration/test_template_differential.py."""

from __future__ import annotations

import datetime

import pytest
from hal0.inference.templates import JinjaTemplate, RenderError, TemplateError, check_system

# Gemma 2's shape: no system role (it never reads a system turn's content).
NO_SYSTEM = ("{% for m in messages %}{% if m.role != 'system' %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}<model>{% endif %}")
STRING_ARGUMENTS = "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments }}{% endfor %}{% endfor %}"
OBJECT_ARGUMENTS = "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}{% endfor %}{% endfor %}"
TYPED = "{% for m in messages %}{% for part in m.content %}{{ part.text }}|{% endfor %}{% endfor %}"


def test_a_system_turn_the_template_ignores_opens_the_next_turn() -> None:
    template = JinjaTemplate(NO_SYSTEM)
    assert not template.caps.system_role
    prompt = template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]).prompt
    assert prompt == "<user>Be brief.\nhi</user><model>"
    check_system(template, "no-system")  # so the persona's prompt still reaches the model


def test_call_arguments_are_objects_only_where_the_template_reads_them_so() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": "é"}'}}]}
    as_text = JinjaTemplate(STRING_ARGUMENTS)
    assert not as_text.caps.object_arguments and as_text.caps.tool_calls
    assert as_text([call], add_generation_prompt=False).prompt == '{"a": "é"}'
    as_object = JinjaTemplate(OBJECT_ARGUMENTS)
    assert as_object.caps.object_arguments
    assert as_object([call]).prompt == '{"a": "é"}'  # parsed, then Hugging Face's tojson (ensure_ascii off)
    with pytest.raises(RenderError, match="not JSON"):
        as_object([{**call, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}]}])


def test_a_template_that_reads_content_as_parts_gets_parts() -> None:
    template = JinjaTemplate(TYPED)
    assert template.caps.typed_content and not template.caps.string_content
    assert template([{"role": "user", "content": "hi"}]).prompt == "hi|"


def test_globals_and_errors() -> None:
    template = JinjaTemplate("{{ strftime_now('%Y') }} {{ {'k': [1, 'ü']} | tojson(indent=2) }}{% if boom %}{{ raise_exception('no') }}{% endif %}")
    assert template([], kwargs={}).prompt == f'{datetime.datetime.now().year} {{\n  "k": [\n    1,\n    "ü"\n  ]\n}}'
    with pytest.raises(RenderError, match=r"^no$"):
        template([], kwargs={"boom": True})
    # What hal0 hands the template is immutable; the template's own lists are its to change (Kimi K2's append).
    with pytest.raises(RenderError, match="SecurityError"):
        JinjaTemplate("{{ messages.append(1) }}")([])
    with pytest.raises(RenderError, match="SecurityError"):
        JinjaTemplate("{{ messages[0].update({'role': 'system'}) }}")([{"role": "user", "content": "hi"}])
    assert JinjaTemplate("{% set l = [] %}{% set _ = l.append(1) %}{{ l | tojson }} {{ messages | map(attribute='role') | tojson }}")(
        [{"role": "user", "content": "hi"}]).prompt == '[1] ["user"]'  # and a filter's iterator is a JSON list, as in llama.cpp
    with pytest.raises(TemplateError, match="does not parse"):
        JinjaTemplate("{% if %}")


def test_bos_the_tokenizer_adds_is_left_out() -> None:
    template = JinjaTemplate("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", bos_token="<s>", eos_token="</s>", add_bos=True)
    rendered = template([{"role": "user", "content": "hi"}])
    assert rendered.prompt == "hi</s>" and rendered.stop == ("</s>",) and not rendered.added_special
