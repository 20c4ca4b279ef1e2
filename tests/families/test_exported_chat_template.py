"""Every family's exported chat template renders transformers' standard content-list messages and plain-string
messages as training renders the same conversation."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration, PaliGemmaForConditionalGeneration

import lightning_mm
from lightning_mm.data.templates import IMAGE_PLACEHOLDER, TokenizerTemplate, get_template
from lightning_mm.families import get_family
from lightning_mm.families.gemma3.layout import BOI_TOKEN
from lightning_mm.families.gemma3.zoo import TINY_GEMMA3_CONFIG
from lightning_mm.families.paligemma.zoo import TINY_PALIGEMMA_CONFIG
from tests.families.gemma_fixtures import hf_checkpoint
from tests.families.gemma_processors import (
    BOI,
    EOI,
    PALI_IMAGE,
    SOFT,
    gemma3_processor,
    gemma_tokenizer,
    paligemma_processor,
    paligemma_tokenizer,
)
from tests.interop.smolvlm_fixtures import make_hf, save_checkpoint, smolvlm_tokenizer

QUESTION = "What color is the shape?"
STANDARD = [
    {"role": "system", "content": [{"type": "text", "text": "Answer in one word."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
    {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    {"role": "user", "content": [{"type": "text", "text": "Where is the shape?"}]},
]


def as_strings(messages: list[dict], template) -> list[dict]:
    """The same conversation as training data writes it: each content one string, images as placeholders."""
    return [{**m, "content": template.content_text(m["content"])} for m in messages]


def training_text(template, messages: list[dict], tokenizer, add_generation_prompt: bool) -> str:
    """The text of the segments training renders (BOS / EOS as the tokenizer writes them); the ``tokenizer``
    template renders the tokenizer's own template."""
    if isinstance(template, TokenizerTemplate):
        source = template._template(tokenizer)
        return tokenizer.apply_chat_template(
            messages, chat_template=source, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    out = []
    for seg in template.render(messages, add_generation_prompt=add_generation_prompt, tokenizer=tokenizer):
        if seg.special is not None:
            out.append(getattr(tokenizer, f"{seg.special}_token") or "")
        elif seg.token_ids:
            out.append(tokenizer.decode(list(seg.token_ids), skip_special_tokens=False))
        else:
            out.append(seg.text)
    return "".join(out)


def smolvlm_module(tmp_path):
    tokenizer = smolvlm_tokenizer()
    return lightning_mm.create_model(f"hf:{save_checkpoint(make_hf('idefics3'), tokenizer, tmp_path / 'smolvlm')}")


def gemma_module(config, hf_class, processor):
    """Builder of the module imported from a tiny transformers checkpoint of ``hf_class`` with ``processor``."""

    def build(tmp_path):
        hf_checkpoint(config, tmp_path / "hf", hf_class)
        processor.save_pretrained(tmp_path / "hf")
        return lightning_mm.create_model(f"hf:{tmp_path / 'hf'}", pretrained=True)

    return build


CASES = {  # zoo name -> (module builder, text the exported processor expects for one image)
    "tiny": (lambda tmp: lightning_mm.create_model("tiny"), IMAGE_PLACEHOLDER),
    "tiny-vicuna": (lambda tmp: lightning_mm.create_model("tiny", template="vicuna_v1"), IMAGE_PLACEHOLDER),
    "tiny-tokenizer-template": (lambda tmp: lightning_mm.create_model("tiny", template="tokenizer"), IMAGE_PLACEHOLDER),
    "tiny-llava-next": (lambda tmp: lightning_mm.create_model("tiny-llava-next"), IMAGE_PLACEHOLDER),
    "tiny-llava-onevision": (lambda tmp: lightning_mm.create_model("tiny-llava-onevision"), IMAGE_PLACEHOLDER),
    "tiny-internvl": (lambda tmp: lightning_mm.create_model("tiny-internvl"), IMAGE_PLACEHOLDER),
    "paligemma": (
        gemma_module(
            {
                **TINY_PALIGEMMA_CONFIG,
                "image_token_id": PALI_IMAGE,
                "text_config": {**TINY_PALIGEMMA_CONFIG["text_config"], "vocab_size": 1600},
            },
            PaliGemmaForConditionalGeneration,
            paligemma_processor(paligemma_tokenizer()),
        ),
        IMAGE_PLACEHOLDER,
    ),
    "gemma3": (
        gemma_module(
            {**TINY_GEMMA3_CONFIG, "boi_token_index": BOI, "eoi_token_index": EOI, "image_token_index": SOFT},
            Gemma3ForConditionalGeneration,
            gemma3_processor(gemma_tokenizer()),
        ),
        BOI_TOKEN,
    ),
    "smolvlm": (smolvlm_module, IMAGE_PLACEHOLDER),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_chat_template_renders_standard_and_string_messages_as_training(case, tmp_path):
    build, image_text = CASES[case]
    torch.manual_seed(0)
    module = build(tmp_path)
    contract, network = module.data_contract, module.network
    family = get_family(module.spec.family)
    hf_config = family.converter(family.hf_model_type(network)).hf_config(network)
    processor = family.hf_processor(contract, network, hf_config)
    template = get_template(contract.template)
    for messages, generate in ((STANDARD, True), (STANDARD[:3], False)):
        strings = as_strings(messages, template)
        expected = training_text(template, strings, contract.tokenizer, generate).replace(IMAGE_PLACEHOLDER, image_text)
        for form in (messages, strings):
            rendered = processor.apply_chat_template(form, add_generation_prompt=generate, tokenize=False)
            assert rendered == expected, case
            assert "{'type'" not in rendered  # a content list is never written literally
        # the exported tokenizer carries the same template as the processor
        assert processor.tokenizer.chat_template == processor.chat_template
    assert rendered.count(image_text) == 1
