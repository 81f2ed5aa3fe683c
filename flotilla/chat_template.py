"""A model's chat template rendered exactly as transformers' ``apply_chat_template`` does, for vLLM's prompts.

vLLM turns a chat request into a prompt by rendering the model's Jinja chat template (through transformers)
and tokenising the result with ``add_special_tokens=False``. A router that wants the engine's block hashes
must render the *same* string, so this follows transformers' ``_compile_jinja_template`` and vLLM's message
preparation:

* an ``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols``
  extension and a ``{% generation %}`` block (rendered as its body, as transformers' AssistantTracker does);
* ``tojson`` as ``json.dumps(ensure_ascii=False)``, ``raise_exception`` raising a template error,
  ``strftime_now``;
* variables ``messages``, ``tools``, ``documents``, ``add_generation_prompt`` and the tokenizer's special
  tokens (``bos_token``, ``eos_token``, … as strings), then the request's ``chat_template_kwargs``;
* message contents as vLLM passes them: a plain string (text parts joined with ``"\\n"``) unless the template
  loops over ``message['content']``, then a list of ``{"type": "text", "text": …}`` parts; an assistant's
  ``tool_calls`` arguments parsed from JSON.

Templates are compiled once per process and cached; rendering is pure.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

ContentFormat = Literal["string", "openai"]


class ChatTemplateError(ValueError):
    """The template cannot render this request (``raise_exception``, a Jinja error) or there is no template."""


class NoChatTemplate(ChatTemplateError):
    """The tokenizer defines no chat template (vLLM answers 400; a router asks the engine's ``/tokenize``)."""


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> Any:
    import jinja2.ext
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}…{% endgeneration %}`` renders its body (transformers marks assistant spans)."""

        tags = {"generation"}  # noqa: RUF012 - jinja's own class attribute

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _loops_over_content(source: str, env: Any) -> bool:
    """vLLM's content-format detection: does the template iterate over a message's ``content``?"""
    from jinja2 import nodes

    def is_content(node: Any) -> bool:
        if isinstance(node, nodes.Getitem):
            return isinstance(node.arg, nodes.Const) and node.arg.value == "content"
        return isinstance(node, nodes.Getattr) and node.attr == "content"

    tree = env.parse(source)
    return any(is_content(loop.iter) for loop in tree.find_all(nodes.For))


class ChatTemplate:
    """One compiled chat template and the special tokens it is rendered with."""

    def __init__(self, source: str, special_tokens: Mapping[str, Any] | None = None) -> None:
        from jinja2.exceptions import TemplateError

        env = _environment()
        try:
            self._template = env.from_string(source)
            self.content_format: ContentFormat = "openai" if _loops_over_content(source, env) else "string"
        except TemplateError as exc:
            raise ChatTemplateError(f"the chat template does not compile: {exc}") from exc
        self.source = source
        self.special_tokens = dict(special_tokens or {})

    def messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The messages as vLLM hands them to the template (contents in this template's format)."""
        out = []
        for message in messages:
            prepared = {k: v for k, v in message.items() if k != "content"}
            prepared["content"] = self._content(message.get("content"))
            calls = prepared.get("tool_calls")
            if prepared.get("role") == "assistant" and isinstance(calls, list):
                prepared["tool_calls"] = [_parsed_call(c) for c in calls]
            out.append(prepared)
        return out

    def _content(self, content: Any) -> Any:
        parts = [content] if isinstance(content, str) else _text_parts(content)
        if self.content_format == "openai":
            return [{"type": "text", "text": text} for text in parts]
        return "\n".join(parts)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Any] | None = None,
        documents: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text; :class:`ChatTemplateError` when the template refuses or fails on this request.

        ``continue_final_message`` leaves the last message open (the text is cut after its content), as
        transformers does; it excludes ``add_generation_prompt``, as there."""
        from jinja2.exceptions import TemplateError

        if continue_final_message and add_generation_prompt:
            raise ChatTemplateError("continue_final_message and add_generation_prompt cannot both be true")
        variables = {**self.special_tokens, **(kwargs or {})}
        try:
            text = str(
                self._template.render(
                    messages=self.messages(messages),
                    tools=list(tools) if tools else None,
                    documents=list(documents) if documents else None,
                    add_generation_prompt=add_generation_prompt,
                    **variables,
                )
            )
        except TemplateError as exc:
            raise ChatTemplateError(str(exc)) from exc
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise ChatTemplateError(f"the chat template failed on this request: {exc}") from exc
        return _open_final(text, messages[-1].get("content")) if continue_final_message and messages else text


def _open_final(text: str, content: Any) -> str:
    """Cut the rendered text right after the final message's content (transformers' continue_final_message)."""
    parts = _text_parts(content)
    final = parts[-1] if parts else ""
    if not final.strip() or final.strip() not in text:
        raise ChatTemplateError(
            "continue_final_message: the final message's content is not in the rendered chat"
        )
    at = text.rindex(final.strip())
    if text[at : at + len(final.lstrip())] == final.lstrip():
        return text[: at + len(final.lstrip())]  # the template kept its trailing spacing
    return text[: at + len(final.strip())]


def _text_parts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
        return texts
    return [str(content)]


def _parsed_call(call: Any) -> Any:
    """vLLM parses an assistant tool call's JSON ``arguments`` into an object before rendering."""
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: rendered as sent
            function["arguments"] = json.loads(arguments)
    return {**call, "function": function}


def template_source(directory: Path, config: Mapping[str, Any], *, tools: bool = False) -> str | None:
    """The chat template a model directory defines: ``chat_template.jinja``, else ``chat_template.json``, else
    ``tokenizer_config.json``'s ``chat_template`` (a string, or named templates: ``default``/``tool_use``)."""
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text()
    json_file = directory / "chat_template.json"
    if json_file.is_file():
        value = json.loads(json_file.read_text()).get("chat_template")
        return str(value) if value else None
    value = config.get("chat_template")
    if isinstance(value, list):
        named = {str(t.get("name")): str(t.get("template")) for t in value if isinstance(t, Mapping)}
        return named.get("tool_use") if tools and "tool_use" in named else named.get("default")
    return str(value) if value else None


def override_source(value: str) -> str:
    """vLLM's ``--chat-template``: a file path, or the template itself (anything with ``{``, ``}`` or a newline)."""
    path = Path(value)
    if path.is_file():
        return path.read_text()
    if not any(c in value for c in "{}\n"):
        raise FileNotFoundError(f"chat template file not found: {value}")
    return value
