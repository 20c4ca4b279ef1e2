"""The smolvlm template renders what SmolVLM's own Jinja chat template renders, supervised on answers only."""

from __future__ import annotations

from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

from lightning_mm.data import get_template
from lightning_mm.families.smolvlm.template import SmolVLMTemplate  # noqa: F401  (registers ``smolvlm``)
from tests.interop.smolvlm_fixtures import smolvlm_tokenizer

CONVERSATION = [
    {"role": "user", "content": "<image>\nWhat colour is the square?"},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "And the circle?"},
    {"role": "assistant", "content": "Blue."},
]


def jinja_messages(messages):
    """LLaVA-style contents as the list form SmolVLM's processor takes (a leading <image> is an image item)."""
    out = []
    for m in messages:
        content = m["content"]
        items = []
        if content.startswith("<image>"):
            items.append({"type": "image"})
            content = content[len("<image>") :]
        items.append({"type": "text", "text": content})
        out.append({"role": m["role"], "content": items})
    return out


def test_text_equals_the_released_jinja_template():
    tok = smolvlm_tokenizer()
    template = get_template("smolvlm")
    for generation, messages in ((False, CONVERSATION), (True, CONVERSATION[:3])):
        ours = "".join(s.text for s in template.render(messages, add_generation_prompt=generation))
        theirs = tok.apply_chat_template(
            jinja_messages(messages),
            chat_template=DEFAULT_CHAT_TEMPLATE,
            tokenize=False,
            add_generation_prompt=generation,
        )
        assert ours == theirs
    assert ours.startswith("<|im_start|>User:<image>\nWhat colour") and ours.endswith(
        "And the circle?<end_of_utterance>\nAssistant:"
    )


def test_only_answers_and_their_end_of_utterance_are_supervised():
    tok = smolvlm_tokenizer()
    segments = get_template("smolvlm").render(CONVERSATION)
    supervised = [s.text for s in segments if s.supervised]
    assert supervised == [" Red.<end_of_utterance>", " Blue.<end_of_utterance>"]
    get_template("smolvlm").check_tokenizer(tok)
