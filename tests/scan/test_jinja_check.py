# ruff: noqa: E501 - the chat templates below are quoted verbatim in their families' style; their lines are long
"""The chat-template analyser: escape primitives are critical, real-world template styles are clean."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bastion.scan  # noqa: F401  (registers the rules)
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.jinja_check import check_template


def findings_for(text: str) -> list[tuple[str, Severity]]:
    ctx = ScanContext()
    check_template(text, Location("model.gguf"), ctx, key="tokenizer.chat_template")
    return [(f.rule_id, f.severity) for f in ctx.findings]


def rules_for(text: str) -> set[str]:
    return {rule for rule, _ in findings_for(text)}


# ---- benign templates, written in the style of the common families ------------------------------

CHATML = """{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"""

LLAMA3 = """{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}
{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"""

MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}"""

GEMMA = """{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"""

QWEN_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- elif messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {{- '<|im_start|>' + message.role }}
        {%- if loop.index0 > ns.last_query_index and reasoning_content %}
            {{- '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
        {%- else %}
            {{- '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if tool_call.function %}{%- set tool_call = tool_call.function %}{%- endif %}
                {{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""

PHI_GENERATION = """{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n'}}{% generation %}{{message['content'] + '<|end|>\\n'}}{% endgeneration %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"""

TOOLS_MACRO = """{%- macro render_params(params) -%}
{%- for name, spec in params.properties|items %}
- {{ name }} ({{ spec.type | default('any') }}){% if name in params.required|default([]) %} required{% endif %}: {{ spec.description | default('') | trim }}
{%- endfor %}
{%- endmacro -%}
{%- set ns = namespace(found=false, sys='') -%}
{%- for m in messages if m.role == 'system' %}{%- set ns.found = true %}{%- set ns.sys = ns.sys ~ m.content %}{%- endfor %}
{%- for tool in tools|default([]) %}### {{ tool.function.name }}
{{ render_params(tool.function.parameters) }}
{% endfor -%}
{%- for m in messages|rejectattr('role', 'equalto', 'system') %}
{%- if loop.index > 20 %}{% break %}{% endif %}
<|{{ m.role }}|>{{ m.content if m.content is string else m.content|map(attribute='text')|join('') }}
{%- endfor %}
{%- if add_generation_prompt %}<|assistant|>{% endif %}"""

BENIGN = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "qwen-tools": QWEN_TOOLS,
    "phi-generation": PHI_GENERATION,
    "tools-macro": TOOLS_MACRO,
}


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_real_world_template_styles_are_clean(name: str) -> None:
    assert [f for f in findings_for(BENIGN[name]) if f[1] >= Severity.MEDIUM] == []


# ---- escapes ----------------------------------------------------------------------------------

ESCAPES = {
    # CVE-2024-34359 proof of concept shape
    "subclasses": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "BST-TPL-001"),
    "cycler-globals": (
        "{{ cycler.__init__.__globals__.os.popen('echo bastion-test').read() }}",
        "BST-TPL-001",
    ),
    "lipsum-subscript": ("{{ lipsum['__globals__']['os'] }}", "BST-TPL-001"),
    "joiner": ("{{ joiner.__init__ }}", "BST-TPL-004"),
    "namespace-init": ("{{ namespace.__init__.__globals__ }}", "BST-TPL-004"),
    "self-context": ("{{ self._TemplateReference__context.cycler }}", "BST-TPL-001"),
    "attr-literal": ("{{ x|attr('__globals__') }}", "BST-TPL-001"),
    "attr-variable": ("{{ x|attr(name) }}", "BST-TPL-002"),
    "map-attribute": ("{{ messages|map(attribute='__class__')|list }}", "BST-TPL-001"),
    "selectattr": ("{{ messages|selectattr('__class__')|list }}", "BST-TPL-001"),
    "concat-star": ("{{ x|attr('_'*2 ~ 'class' ~ '_'*2) }}", "BST-TPL-002"),
    "tilde": ("{{ x['__cla' ~ 'ss__'] }}", "BST-TPL-002"),
    "plus": ("{% set n = '__glo' + 'bals__' %}{{ x[n] }}", "BST-TPL-002"),
    "join": ("{{ x[['_', '_', 'class', '_', '_']|join] }}", "BST-TPL-002"),
    "reverse": ("{{ x|attr('ssalc__'|reverse) }}", "BST-TPL-002"),
    "replace": ("{{ x['XXclassXX'|replace('X', '_')] }}", "BST-TPL-002"),
    "percent-format": ("{{ x['%s%sinit%s%s'|format('_', '_', '_', '_')] }}", "BST-TPL-002"),
    "brace-format": ("{{ x['{}{}init{}{}'.format('_', '_', '_', '_')] }}", "BST-TPL-002"),
    "format-field": ("{{ '{0.__class__.__base__}'.format(messages) }}", "BST-TPL-002"),
    "slicing": ("{{ x['?__class__?'[1:-1]] }}", "BST-TPL-002"),
    "dict-keys": ("{{ x[dict(__cl=1, ass__=2)|join] }}", "BST-TPL-002"),
    "set-block": ("{% set a %}__cla{% endset %}{% set b = a ~ 'ss__' %}{{ x|attr(b) }}", "BST-TPL-002"),
    "set-block-filter": ("{% set a | reverse %}ssalc__{% endset %}{{ x[a] }}", "BST-TPL-002"),
    "char-harvest": ("{{ x[(()|select|string)[24] * 2 ~ 'class'] }}", "BST-TPL-002"),
    "namespace-built": (
        "{% set ns = namespace(s='') %}{% for c in ['_', '_', 'init', '_', '_'] %}{% set ns.s = ns.s ~ c %}"
        "{% endfor %}{{ x[ns.s] }}",
        "BST-TPL-002",
    ),
    "popen": ("{{ x.os.popen('echo bastion-test') }}", "BST-TPL-003"),
    "config": ("{{ config.items() }}", "BST-TPL-004"),
    "request": ("{{ request.application }}", "BST-TPL-004"),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escape_primitives_are_critical(name: str) -> None:
    text, rule = ESCAPES[name]
    found = findings_for(text)
    assert (rule, Severity.CRITICAL) in found, found


def test_evidence_names_key_and_expression() -> None:
    ctx = ScanContext()
    check_template(
        "line one\n{{ lipsum.__globals__ }}", Location("m.gguf"), ctx, key="tokenizer.chat_template.tool_use"
    )
    finding = next(f for f in ctx.findings if f.rule_id == "BST-TPL-001")
    evidence = finding.evidence_map
    assert evidence["key"] == "tokenizer.chat_template.tool_use"
    assert evidence["expression"] == "lipsum.__globals__"
    assert evidence["line"] == "2"


def test_syntax_error_is_high_and_include_is_medium() -> None:
    assert findings_for("{% for m in messages %}{{ m.content }}") == [("BST-TPL-005", Severity.HIGH)]
    assert findings_for("{% include 'secrets.txt' %}") == [("BST-TPL-006", Severity.MEDIUM)]


def test_deep_nesting_is_incomplete_not_a_crash() -> None:
    deep = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    assert ("BST-SCAN-001", Severity.HIGH) in findings_for(deep)
    long_chain = "{{ " + " + ".join(["x"] * 20000) + " }}"
    assert all(sev < Severity.MEDIUM for _, sev in findings_for(long_chain))


def test_markers_with_double_underscores_are_text() -> None:
    # llama.cpp's multimodal marker and similar tokens are not attribute names.
    template = (
        "{% for m in messages %}{{ '<__media__>' ~ '\\n' ~ m['content'] }}{{ '<__image__>' }}{% endfor %}"
    )
    assert findings_for(template) == []


def test_printing_dunder_literal_in_template_data_is_not_flagged() -> None:
    # Plain text outside {{ }} is output, never evaluated.
    assert findings_for("Use obj.__class__ to see the type.\n{{ messages[0].content }}") == []


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}%#()[]|~+*_'\".: abcxs0123\n-")), max_size=200))
def test_fuzz_arbitrary_template_text_never_raises(text: str) -> None:
    ctx = ScanContext()
    check_template(text, Location("fuzz"), ctx, key="k")
    assert all(f.rule_id.startswith(("BST-TPL-", "BST-SCAN-")) for f in ctx.findings)
