"""Gemma 3's and PaliGemma's image layouts and PaliGemma's prompt format write the pixels and ids of transformers'
Gemma3Processor / PaliGemmaProcessor (PIL backends), for several image sizes."""

from __future__ import annotations

import pytest
import torch

from lightning_mm.data.collate import sample_prefix_mask
from lightning_mm.data.segments import encode_conversation
from lightning_mm.zoo.contract import data_contract
from lightning_mm.zoo.registry import get_spec
from tests.families.gemma_processors import (
    BOI,
    EOI,
    PALI_IMAGE,
    SIZES,
    SOFT,
    gemma3_processor,
    gemma_tokenizer,
    image,
    normalised,
    paligemma_processor,
    paligemma_tokenizer,
)


@pytest.fixture(scope="module")
def gemma3():
    tok = gemma_tokenizer()
    return tok, data_contract(get_spec("tiny-gemma3").replace(image_token_id=None), tok).layout


@pytest.fixture(scope="module")
def paligemma():
    tok = paligemma_tokenizer()
    return tok, data_contract(get_spec("tiny-paligemma").replace(image_token_id=None), tok)


def test_gemma3_pixels_and_ids_equal_the_processor(gemma3):
    tok, layout = gemma3
    processor = gemma3_processor(gemma_tokenizer())
    newlines = tok.encode("\n\n", add_special_tokens=False)
    assert layout.prompt_ids((10, 10)) == [*newlines, BOI, *[SOFT] * 16, EOI, *newlines]
    text = tok.encode("Look at ", add_special_tokens=False), tok.encode(" now", add_special_tokens=False)
    for i, size in enumerate(SIZES):
        img = image(size, seed=i)
        ours = layout.prepare(img)
        out = processor(text=["Look at <start_of_image> now"], images=[img], return_tensors="pt")
        assert ours.size == size and ours.tiles.shape == (1, 3, 64, 64) and ours.tiles.dtype == torch.uint8
        torch.testing.assert_close(out["pixel_values"].double(), normalised(ours.tiles), rtol=0, atol=1e-6)
        ids = [tok.bos_token_id, *text[0], *layout.prompt_ids(size), *text[1]]
        assert out["input_ids"][0].tolist() == ids


def test_paligemma_pixels_ids_and_labels_equal_the_processor(paligemma):
    tok, contract = paligemma
    layout, template = contract.layout, contract.template
    assert template.name == "paligemma" and contract.attention_pattern == "prefix_lm"
    processor = paligemma_processor(paligemma_tokenizer())
    for i, size in enumerate(SIZES):
        img = image(size, seed=i)
        ours = layout.prepare(img)
        question, answer = ["What is it?", "Describe  it", "caption en", "Is it red?", "ocr"][i], f"A cat {i}."
        out = processor(text=["<image>" + question], images=[img], suffix=[answer], return_tensors="pt")
        assert ours.size == size and ours.tiles.shape == (1, 3, 32, 32)
        torch.testing.assert_close(out["pixel_values"].double(), normalised(ours.tiles), rtol=0, atol=1e-6)
        messages = [{"role": "user", "content": f"<image>\n{question}"}, {"role": "assistant", "content": answer}]
        enc = encode_conversation(template.render(messages), tok, [layout.prompt_ids(size)])
        assert enc.input_ids == out["input_ids"][0].tolist()
        assert enc.labels == out["labels"][0].tolist()
        assert enc.input_ids[:16] == [PALI_IMAGE] * 16 and enc.input_ids[16] == tok.bos_token_id
        sample = {"id": i, "input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels)}
        prefix = sample_prefix_mask(sample)
        assert prefix.tolist() == (out["token_type_ids"][0] == 0).tolist()  # image + BOS + prefix + "\n"


def test_paligemma_generation_prompt_is_the_prefix(paligemma):
    tok, contract = paligemma
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "<image> caption en"}]
    enc = encode_conversation(contract.template.render(messages, add_generation_prompt=True), tok, [[PALI_IMAGE] * 16])
    processor = paligemma_processor(paligemma_tokenizer())
    out = processor(text=["<image>caption en"], images=[image((20, 20))])
    assert enc.input_ids == out["input_ids"][0]


def test_paligemma_second_question_is_an_error_naming_the_sample(paligemma):
    tok, contract = paligemma
    messages = [
        {"role": "user", "content": "<image>\nWhat is it?"},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "And its colour?"},
        {"role": "assistant", "content": "Red."},
    ]
    enc = encode_conversation(contract.template.render(messages), tok, [contract.layout.prompt_ids((8, 8))])
    sample = {"id": "two-questions", "input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels)}
    with pytest.raises(ValueError, match="two-questions.*one prefix and one answer"):
        sample_prefix_mask(sample)


def test_gemma3_layout_needs_its_image_tokens():
    with pytest.raises(ValueError, match="start_of_image"):
        data_contract(get_spec("tiny-gemma3").replace(image_token_id=None), paligemma_tokenizer())
