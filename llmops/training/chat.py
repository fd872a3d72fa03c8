"""Chat-format data: OpenAI-style `messages` rendered with the model's own chat template, the loss
on the assistant turns only.

A conversation is a list of `{"role": "system" | "user" | "assistant", "content": "<text>"}` with at
least one assistant turn. `render` renders it with the tokenizer's chat template
(`tokenizer.apply_chat_template`, Jinja, the template the model ships: vLLM applies the same one to
chat completions) and tells which tokens are targets:

- For every assistant turn i, the template renders the turns before it with the generation prompt
  (`P_i = render(messages[:i], add_generation_prompt=True)`) and with the turn
  (`Q_i = render(messages[:i + 1])`); the characters `[len(P_i), len(Q_i))` of the whole rendering
  are that turn: its content and the template's end-of-turn marker, which the model must learn to
  emit. This needs a template that renders a conversation by appending turns (every common one
  does); one that does not is refused, naming the turn.
- The rendering is tokenized once, with character offsets (a fast tokenizer); a token is a target
  when it starts inside an assistant turn's characters. Every other token (system and user turns,
  the template's role headers, the generation prompt) is input only: its label is -100.

Targets travel through packing with their tokens (`flag`): a token that is input only is stored as
`-(id + 1)`, so a packed block (llmops/training/blocks.py) keeps every token's flag in place,
whatever the block boundaries; `unflag` turns the ids back and gives the mask.

A model without a chat template is refused (`require_template`): a template made up here would
train a format the model is not served with (vLLM renders chat requests with the model's own
template, and refuses chat for a model without one).

No heavy imports at module level: Ray Data calls these in `map_batches`, unit tests call them directly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmops.training.errors import UserError

ROLES = ("system", "user", "assistant")
Message = dict[str, str]


def check_messages(value: Any, where: str) -> list[Message]:
    """`value` as a conversation: a list of {"role", "content"} objects, roles system, user or
    assistant, text content, at least one assistant turn. Raises UserError naming `where` and the turn."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: expected a non-empty list of messages, got {type(value).__name__}")
    out: list[Message] = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise UserError(f"{where}: message {i} is a JSON {type(message).__name__}, expected an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise UserError(f"{where}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise UserError(
                f"{where}: message {i} ({role}) has content of type {type(content).__name__}, expected text"
            )
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"{where}: no assistant message: there is nothing to learn from the conversation")
    return out


def dumps(messages: Sequence[Message]) -> str:
    """The conversation as the prepared documents keep it (one JSON array, UTF-8 as is)."""
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)


def loads(text: str) -> list[Message]:
    return json.loads(text)


def plain(messages: Sequence[Message]) -> str:
    """The conversation as one text, "role: content" per turn: the key duplicates and the split are
    computed on, and what the length and quality filters measure (contents only, see `contents`)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def contents(messages: Sequence[Message]) -> str:
    return "\n".join(m["content"] for m in messages)


def require_template(tokenizer: Any, model: str) -> str:
    """The tokenizer's chat template; UserError naming `model` when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one renders conversations
        template = template.get("default")
    if not template:
        raise UserError(
            f"chat-format data needs the model's chat template, and {model} has none: give its checkpoint a"
            " chat_template.jinja (or chat_template in tokenizer_config.json) — the template it is served"
            " with — or convert the data to format jsonl with a text field"
        )
    return template


def _rendered(tokenizer: Any, messages: Sequence[Message], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as e:  # the template's own raise_exception(), or a Jinja error
        raise UserError(f"the chat template refuses the conversation ({type(e).__name__}: {e})") from e


def assistant_spans(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """(the rendering, the character spans [start, end) of its assistant turns); see the module docstring."""
    text = _rendered(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _rendered(tokenizer, messages[:i], True)
        through = _rendered(tokenizer, messages[: i + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            raise UserError(
                f"the chat template does not render the conversation by appending turns (at message {i},"
                " the assistant's): llmops cannot tell the assistant's tokens from the prompt's"
            )
        spans.append((len(before), len(through)))
    return text, spans


def render(tokenizer: Any, messages: Sequence[Message]) -> tuple[list[int], list[bool]]:
    """(token ids, target flags) of a conversation: the whole rendering, its assistant turns the
    targets. `tokenizer`: a transformers fast tokenizer with a chat template."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    targets = [any(start <= s < end for start, end in spans) for s, _ in encoded["offset_mapping"]]
    return ids, targets


def flag(ids: Sequence[int], targets: Sequence[bool]) -> list[int]:
    """Ids with the tokens that are input only stored as -(id + 1) (see the module docstring)."""
    return [i if t else -(i + 1) for i, t in zip(ids, targets, strict=True)]


def unflag(flagged: Any) -> tuple[Any, Any]:
    """(ids, targets) of flagged ids; works on numpy arrays and torch tensors alike."""
    inputs_only = flagged < 0
    return flagged * ~inputs_only + (-flagged - 1) * inputs_only, ~inputs_only


def prompt_and_reference(messages: Sequence[Message], where: str) -> tuple[list[Message], str]:
    """An evaluation conversation split at its last assistant turn: (the turns before it, its content)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        raise UserError(f"{where}: the last assistant message needs at least one message before it")
    return list(messages[:last]), messages[last]["content"]
