"""llmops/training/chat.py and its path through preparation: a known template, the exact target
positions, the flags kept through packing, and the labels train._batch makes of them."""

from __future__ import annotations

import json

import pytest

from llmops.training import chat
from llmops.training.errors import UserError

pytest.importorskip("transformers")
pa = pytest.importorskip("pyarrow")

# ChatML, as Qwen and many instruct models write it.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ["system", "user", "assistant", "Be", "brief", "hi", "there", "hello", "bye", "see", "you", "plain"]
CONVERSATION = [
    {"role": "system", "content": "Be brief"},
    {"role": "user", "content": "hi there"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "bye"},
    {"role": "assistant", "content": "see you"},
]


def tokenizer(template: str | None = CHATML):
    """A word-level fast tokenizer: one token a word or special marker, so positions are readable."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = template
    return fast


def test_render_targets_exactly_the_assistant_turns():
    tok = tokenizer()
    ids, targets = chat.render(tok, CONVERSATION)
    words = tok.convert_ids_to_tokens(ids)
    assert words == [
        "<|im_start|>", "system", "Be", "brief", "<|im_end|>",
        "<|im_start|>", "user", "hi", "there", "<|im_end|>",
        "<|im_start|>", "assistant", "hello", "<|im_end|>",
        "<|im_start|>", "user", "bye", "<|im_end|>",
        "<|im_start|>", "assistant", "see", "you", "<|im_end|>",
    ]  # fmt: skip
    # The assistant's content and its end-of-turn marker; never its role header.
    assert [i for i, t in enumerate(targets) if t] == [12, 13, 20, 21, 22]


def test_flags_survive_packing_and_become_labels():
    """A plain document and a conversation packed into blocks of 8: the block boundaries cut the
    conversation, and every token keeps its flag; train._batch gives labels only to targets."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from llmops.training.blocks import InMemory
    from llmops.training.prepare import pack_batch
    from llmops.training.train import _batch

    tok = tokenizer()
    batch = pa.table({"text": ["plain hello", chat.dumps(CONVERSATION)], "chat": [False, True]})
    packed = pack_batch(
        batch,
        tokenizer_json=tok.backend_tokenizer.to_str(),
        bos=tok.bos_token_id,
        eos=tok.eos_token_id,
        pad=tok.pad_token_id,
        block_size=8,
        chat_template=CHATML,
        special={k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)},
    )
    flat = [i for row in packed.column("input_ids").to_pylist() for i in row]
    lengths = packed.column("length").to_pylist()
    # plain: <s> plain hello </s>, all targets; the conversation: 23 tokens and an appended </s>.
    assert sum(lengths) == 4 + 23 + 1 and len(lengths) == 4
    ids, targets = chat.unflag(np.asarray(flat[: sum(lengths)]))
    conversation_ids, conversation_targets = chat.render(tok, CONVERSATION)
    plain = [1, tok.convert_tokens_to_ids("plain"), tok.convert_tokens_to_ids("hello"), 2]
    assert ids.tolist() == [*plain, *conversation_ids, tok.eos_token_id]
    assert targets.tolist() == [True] * 4 + conversation_targets + [False]

    blocks = InMemory(
        np.asarray(packed.column("input_ids").to_pylist(), dtype=np.int64),
        np.asarray(lengths, dtype=np.int64),
    )
    x, _, labels = _batch(blocks, [0, 1, 2, 3], torch.device("cpu"))
    assert x.min() >= 0 and x.flatten()[: sum(lengths)].tolist() == ids.tolist()
    where = (labels.flatten() != -100).nonzero().flatten().tolist()
    # plain 0..3; the conversation starts at 4: its targets 12, 13, 20, 21, 22 sit at 16, 17, 24, 25, 26.
    assert where == [0, 1, 2, 3, 16, 17, 24, 25, 26]
    # A batch of prompt tokens only has no loss, and no NaN.
    from llmops.training.train import _token_loss

    logits = torch.zeros(1, 3, 5, requires_grad=True)
    loss = _token_loss(logits, torch.full((1, 3), -100), 0.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and not torch.isnan(logits.grad).any()


def test_a_model_without_a_template_is_refused_by_name():
    with pytest.raises(UserError, match=r"tiny-base:1 has none: give its checkpoint a chat_template.jinja"):
        chat.require_template(tokenizer(None), "tiny-base:1")
    assert chat.require_template(tokenizer(), "m") == CHATML


def test_a_template_that_does_not_append_turns_is_refused():
    reversed_template = "{% for m in messages|reverse %}{{ m.content }} {% endfor %}"
    with pytest.raises(UserError, match="does not render the conversation by appending turns"):
        chat.render(tokenizer(reversed_template), CONVERSATION)


def test_messages_are_checked_with_where_they_are():
    assert chat.check_messages(CONVERSATION, "w") == CONVERSATION
    cases = [
        ([], "expected a non-empty list of messages"),
        ([{"role": "tool", "content": "x"}], "message 0 has role 'tool'"),
        ([{"role": "user", "content": 3}], r"message 0 \(user\) has content of type int"),
        ([{"role": "user", "content": "q"}], "no assistant message"),
    ]
    for value, message in cases:
        with pytest.raises(UserError, match=message):
            chat.check_messages(value, "src: line 4")


def test_evaluation_splits_at_the_last_assistant_turn():
    prompt, reference = chat.prompt_and_reference(CONVERSATION, "w")
    assert prompt == CONVERSATION[:4] and reference == "see you"
    with pytest.raises(UserError, match="needs at least one message before it"):
        chat.prompt_and_reference([{"role": "assistant", "content": "x"}], "w")


def test_ingest_reads_chat_lines():
    from llmops.training.ingest import parse

    lines = [
        json.dumps({"conversation": CONVERSATION}),
        json.dumps(
            {"conversation": [{"role": "user", "content": "é"}, {"role": "assistant", "content": "ü"}]}
        ),
    ]
    docs = parse("\n".join(lines).encode(), "chat", "conversation", "src")
    assert [chat.loads(d) for d in docs] == [CONVERSATION, json.loads(lines[1])["conversation"]]
    assert "é" in docs[1]  # kept as UTF-8, not escaped
    with pytest.raises(UserError, match=r"line 1 has no field 'messages' .*set messagesField"):
        parse(lines[0].encode(), "chat", "messages", "src")
    with pytest.raises(UserError, match=r"src: line 1: message 0 has role 'bot'"):
        parse(json.dumps({"messages": [{"role": "bot", "content": "x"}]}).encode(), "chat", "messages", "src")


def test_preparation_scrubs_each_message_and_keeps_the_conversation():
    """clean_batch on a conversation: PII scrubbed inside each message's content, counts summed, the
    roles and order kept; the duplicate key is the "role: content" text."""
    from llmops.training import text
    from llmops.training.prepare import clean_batch

    conversation = [
        {"role": "user", "content": "Mail me at jane.doe@example.com  please"},
        {"role": "assistant", "content": "Sure, or call +1 415 555 0100 or write to bob@example.org"},
    ]
    batch = pa.table({"id": [7], "text": [chat.dumps(conversation)], "chat": [True]})
    out = clean_batch(
        batch,
        normalize=True,
        min_length=None,
        max_length=None,
        entities=["email", "phone"],
        regions=["US"],
        pii_action="redact",
        name_detector=None,
        near=False,
    ).to_pylist()[0]
    cleaned = chat.loads(out["text"])
    assert [m["role"] for m in cleaned] == ["user", "assistant"] and out["chat"] is True
    assert cleaned[0]["content"] == "Mail me at [EMAIL] please"
    assert "[PHONE]" in cleaned[1]["content"] and "[EMAIL]" in cleaned[1]["content"]
    assert (out["pii_email"], out["pii_phone"]) == (2, 1) and out["drop"] == ""
    assert out["hash"] == text.content_hash(chat.plain(cleaned))


def test_augmentation_changes_each_message_and_keeps_the_roles():
    from llmops.training import text
    from llmops.training.prepare import augment_batch

    conversation = [
        {"role": "user", "content": "please tell me how to reset the password of my account"},
        {"role": "assistant", "content": "open settings then security then choose reset password now"},
    ]
    batch = pa.table({"text": ["a plain document with several words in it", chat.dumps(conversation)]})
    batch = batch.append_column("chat", pa.array([False, True]))
    steps = [{"type": "randomSwap", "probability": 0.3, "copies": 2}]
    out = augment_batch(batch, steps=steps, seed=7).to_pylist()
    assert [r["chat"] for r in out] == [False, True, False, True, False, True]
    assert out[2]["text"] == text.augment(
        "a plain document with several words in it", "randomSwap", 0.3, 0, 7
    )
    copy = chat.loads(out[3]["text"])
    assert [m["role"] for m in copy] == ["user", "assistant"]
    assert copy[1]["content"] == text.augment(conversation[1]["content"], "randomSwap", 0.3, 0, 7)
    assert copy != conversation and chat.loads(out[5]["text"]) != copy  # two different copies
