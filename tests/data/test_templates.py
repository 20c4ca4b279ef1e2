"""Chat templates: supervised tokens are exactly the answers + end-of-turn, image tokens expand, clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lightning_mm.data import (
    IGNORE_INDEX,
    ChatFormat,
    Segment,
    VLMCollator,
    encode_segments,
    get_template,
    list_templates,
    register_template,
)
from lightning_mm.data.scenes import build_synthetic_tokenizer
from lightning_mm.data.segments import _direct_backend, _plain_fast_class, encode_texts
from lightning_mm.data.tokenizer import build_word_tokenizer

LLAVA_DIR = Path(__file__).resolve().parents[1] / "assets" / "llava"
TEMPLATES = ("plain", "vicuna_v1", "llama3", "chatml", "tokenizer")
# Text the template writes between the assistant header and the answer (part of the supervised span).
ANSWER_PREFIX = {"vicuna_v1": " "}


def _supervised_runs(labels: torch.Tensor) -> list[list[int]]:
    """Maximal runs of consecutive supervised label ids."""
    runs, current = [], []
    for x in labels.tolist():
        if x == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(x)
    return runs + ([current] if current else [])


def test_registry_lists_every_template():
    assert set(TEMPLATES) <= set(list_templates())
    with pytest.raises(ValueError, match="Unknown chat template 'nope'.*vicuna_v1"):
        get_template("nope")


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.parametrize("template", TEMPLATES)
def test_supervised_tokens_are_the_answers_each_followed_by_end_of_turn(
    template, fmt, make_dataset, records, tokenizer
):
    ds = make_dataset(LLAVA_DIR / f"llava_tiny.{fmt}", template)
    assert len(ds) == len(records)
    eot = get_template(template).end_of_turn(tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    for i, rec in enumerate(records):
        sample = ds[i]
        ids, labels = sample["input_ids"], sample["labels"]
        assert sample["id"] == str(rec["id"])
        assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape and ids.ndim == 1
        supervised = labels != IGNORE_INDEX
        assert torch.equal(labels[supervised], ids[supervised]), "a supervised label differs from its input token"
        answers = [c["value"] for c in rec["conversations"] if c["from"] == "gpt"]
        expected = "".join(ANSWER_PREFIX.get(template, "") + a + eot for a in answers)
        assert tokenizer.decode(ids[supervised], skip_special_tokens=False) == expected, rec["id"]
        assert int((ids[supervised] == eot_id).sum()) == len(answers)
        for run in _supervised_runs(labels):  # every span closes with the end-of-turn token
            assert run[-1] == eot_id


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("num_image_tokens", [1, 7])
def test_each_image_becomes_the_tower_token_count(template, num_image_tokens, make_dataset, records, tokenizer):
    ds = make_dataset(template=template, num_image_tokens=num_image_tokens)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    for i, rec in enumerate(records):
        sample = ds[i]
        n_images = len([rec["image"]] if isinstance(rec.get("image"), str) else rec.get("image") or [])
        ids = sample["input_ids"]
        assert int((ids == image_id).sum()) == n_images * num_image_tokens
        assert bool((sample["labels"][ids == image_id] == IGNORE_INDEX).all())
        if n_images:
            assert tuple(sample["pixel_values"].shape) == (n_images, 3, 32, 32)
        else:
            assert sample["pixel_values"] is None


@pytest.mark.parametrize("template", ["vicuna_v1", "llama3", "chatml", "tokenizer"])
def test_image_placeholder_stays_where_the_turn_puts_it(template, make_dataset, records, tokenizer):
    ds = make_dataset(template=template)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    index = next(i for i, r in enumerate(records) if r["id"] == "image-last")
    ids = ds[index]["input_ids"].tolist()
    first = ids.index(image_id)
    assert tokenizer.decode(ids[:first]).endswith("What shape do you see in this picture?\n")
    index = next(i for i, r in enumerate(records) if r["id"] == 42)  # "Compare <image> with <image>. ..."
    ids = ds[index]["input_ids"].tolist()
    spans = [k for k in range(len(ids)) if ids[k] == image_id and (k == 0 or ids[k - 1] != image_id)]
    assert len(spans) == 2
    assert tokenizer.decode(ids[spans[0] + 4 : spans[1]]) == " with "


def test_chatml_rendering_is_unchanged():
    messages = [
        {"role": "user", "content": "<image>\nWhat color?"},
        {"role": "assistant", "content": "red"},
    ]
    segs = get_template("chatml").render(messages)
    assert segs == [
        Segment("<|im_start|>user\n<image>\nWhat color?<|im_end|>\n"),
        Segment("<|im_start|>assistant\n"),
        Segment("red<|im_end|>", supervised=True),
        Segment("\n"),
    ]
    gen = get_template("chatml", system_prompt="Be brief.").render(messages[:1], add_generation_prompt=True)
    assert [s.text for s in gen] == [
        "<|im_start|>system\nBe brief.<|im_end|>\n",
        "<|im_start|>user\n<image>\nWhat color?<|im_end|>\n",
        "<|im_start|>assistant\n",
    ]


@pytest.mark.parametrize(
    ("template", "prompt_end"),
    [
        ("vicuna_v1", "ASSISTANT:"),
        ("llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("chatml", "<|im_start|>assistant\n"),
        ("tokenizer", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ],
)
def test_generation_prompt_ends_with_the_assistant_header(template, prompt_end, make_dataset, records, tokenizer):
    ds = make_dataset(template=template, generation=True)
    index = next(i for i, r in enumerate(records) if r["id"] == "text-only")
    sample = ds[index]
    assert "labels" not in sample
    text = tokenizer.decode(sample["input_ids"])
    assert text.endswith(prompt_end)
    assert sample["answer"] == "Rome is the capital of Italy."
    assert "Paris." in text and "Rome" not in text  # earlier answers stay in the prompt, the last one is left out


def test_plain_keeps_only_images_of_user_turns(make_dataset, records, tokenizer):
    ds = make_dataset(template="plain")
    index = next(i for i, r in enumerate(records) if r["id"] == "caption-image-first")
    ids = ds[index]["input_ids"].tolist()
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[1:]) == "<image>" * 4 + "A red circle on a dark background.</s>"


def test_padding_equal_to_eos_never_masks_the_real_eos(make_dataset, tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token
    ds = make_dataset(template="vicuna_v1", tok=tok)
    samples = [ds[i] for i in range(len(ds))]
    batch = VLMCollator(tok.pad_token_id, "right", ds.image_token_id, ds.num_image_tokens)(samples)
    for b, s in enumerate(samples):
        n = len(s["input_ids"])
        assert int(batch["attention_mask"][b].sum()) == n
        assert int(batch["labels"][b, n - 1]) == tok.eos_token_id  # the final answer's EOS stays a target
        assert bool((batch["labels"][b, n:] == IGNORE_INDEX).all())
        assert int((batch["labels"][b] != IGNORE_INDEX).sum()) == int((s["labels"] != IGNORE_INDEX).sum())


def test_template_needs_its_special_tokens():
    words = build_word_tokenizer(["hello"])  # ChatML specials only, no BOS
    get_template("chatml").check_tokenizer(words)
    with pytest.raises(ValueError, match="<\\|start_header_id\\|>"):
        get_template("llama3").check_tokenizer(words)


def test_missing_bos_is_left_out_but_missing_eos_is_an_error(tokenizer):
    words = build_word_tokenizer(["hello"])  # no BOS; EOS is <|im_end|>
    ids, labels, _ = encode_segments([Segment(special="bos"), Segment("hello")], words, 0, 1)
    assert ids == [words.convert_tokens_to_ids("hello")]
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = None
    with pytest.raises(ValueError, match="no EOS"):
        encode_segments([Segment("hello", supervised=True), Segment(special="eos", supervised=True)], tok, 0, 1)
    with pytest.raises(ValueError, match="no EOS"):
        get_template("vicuna_v1").check_tokenizer(tok)


def test_tokenizer_template_errors_are_clear(tokenizer):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat_template"):
        get_template("tokenizer").check_tokenizer(tok)
    no_generation = tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(ValueError, match="no \\{% generation %\\}"):
        get_template("tokenizer", chat_template=no_generation).render(msgs, tokenizer=tokenizer)
    # a generation block around the first answer only: the second answer would silently go unsupervised
    first_only = tokenizer.chat_template.replace(
        "{% generation %}{{ message['content'] | trim }}<|eot_id|>{% endgeneration %}",
        "{% if loop.index == 2 %}{% generation %}{{ message['content'] }}<|eot_id|>{% endgeneration %}"
        "{% else %}{{ message['content'] }}<|eot_id|>{% endif %}",
    )
    assert first_only != tokenizer.chat_template
    two_turns = msgs + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "sure"}]
    get_template("tokenizer", chat_template=first_only).render(msgs, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="1 supervised span\\(s\\) for 2 assistant turn"):
        get_template("tokenizer", chat_template=first_only).render(two_turns, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="pass `tokenizer=`"):
        get_template("tokenizer").render(msgs)


def test_tokenizer_template_end_of_turn_comes_from_the_template(tokenizer):
    assert get_template("tokenizer").end_of_turn(tokenizer) == "<|eot_id|>"
    assert get_template("vicuna_v1").end_of_turn(tokenizer) == tokenizer.eos_token == "</s>"


# Texts as templates and LLaVA records produce them: markup, unicode, odd whitespace, the placeholder's surroundings.
TEXTS = [
    "hello world",
    " leading space",
    "trailing space ",
    "  two  spaces\tand\ttabs\n\nnew lines\r\n",
    " ",
    "\n",
    "<image>",
    "<image>\nDescribe the image briefly.",
    "What differs?\n<image>",
    "a<image>b",
    " <image> ",
    "<image><image>\n<image>",
    "USER: <image>\nWhat is it? ASSISTANT:",
    "unicode: café naïve Straße 日本語 한국어 emoji 🎉👍🏽 zero\u200bwidth \u00a0nbsp",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "</s><s><pad><unk> specials inside text",
    "The first shows a red circle, the second a tall green bar. " * 20,
]


def _fast_and_word_tokenizers(tokenizer):
    return {"asset byte-level BPE": tokenizer, "synthetic word-level": build_synthetic_tokenizer()}


def test_direct_rust_encoding_gives_the_tokenizers_own_ids(tokenizer):
    pieces = [p for t in TEXTS for p in t.split("<image>") if p]  # as encode_segments cuts them
    for name, tok in _fast_and_word_tokenizers(tokenizer).items():
        assert _direct_backend(tok) is not None, name  # the fast path is the one tested
        texts = TEXTS + pieces
        expected = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        assert encode_texts(tok, texts) == expected, name
        assert [encode_texts(tok, [t])[0] for t in texts] == expected, name
        assert encode_texts(tok, []) == []


def test_encoding_falls_back_to_the_tokenizer_when_the_backend_would_differ(tokenizer):
    tok = copy.deepcopy(tokenizer)
    text = "a sentence of quite a few words, longer than three tokens"
    tok.backend_tokenizer.enable_truncation(max_length=3)  # transformers turns this off for its own calls
    assert _direct_backend(tok) is None
    assert encode_texts(tok, [text]) == [tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert len(encode_texts(tok, [text])[0]) > 3
    assert _direct_backend(tok) is not None  # transformers' own call turned truncation off again
    tok.split_special_tokens = True  # "<image>" as text: transformers tells the backend at its next call
    assert _direct_backend(tok) is None
    split = encode_texts(tok, ["<image>"])
    assert len(split[0]) > 1 and split == [tok("<image>", add_special_tokens=False)["input_ids"]]
    assert _direct_backend(tok) is not None and encode_texts(tok, ["<image>"]) == split
    assert _direct_backend(tokenizer) is not None  # the shared tokenizer was not touched

    class Custom(type(tokenizer)):
        def _encode_plus(self, *args, **kwargs):  # a subclass changing the encoding path keeps it
            return super()._encode_plus(*args, **kwargs)

    assert not _plain_fast_class(Custom) and _plain_fast_class(type(tokenizer))


def test_a_new_format_is_a_table_row(tokenizer):
    fmt = ChatFormat(
        name="test_zephyr",
        roles={
            "system": ("<|system|>\n", "</s>\n"),
            "user": ("<|user|>\n", "</s>\n"),
            "assistant": ("<|assistant|>\n", ""),
        },
        after_answer="\n",
    )
    assert register_template(fmt) is fmt and "test_zephyr" in list_templates()
    msgs = [{"role": "user", "content": "<image>\nhi"}, {"role": "assistant", "content": "ok"}]
    segs = get_template("test_zephyr", system_prompt="Be brief.").render(msgs)
    assert segs == [
        Segment("<|system|>\nBe brief.</s>\n"),
        Segment("<|user|>\n<image>\nhi</s>\n"),
        Segment("<|assistant|>\n"),
        Segment("ok", supervised=True),
        Segment(special="eos", supervised=True),  # an empty assistant suffix: the tokenizer's EOS ends the answer
        Segment("\n"),
    ]
    assert get_template("test_zephyr").end_of_turn(tokenizer) == tokenizer.eos_token
    with pytest.raises(ValueError, match="'test_zephyr' has no option \\['nope'\\]"):
        get_template("test_zephyr", nope=1)
    with pytest.raises(ValueError, match="'chatml' has no role 'tool'"):
        get_template("chatml").render([{"role": "tool", "content": "{}"}])
