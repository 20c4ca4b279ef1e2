"""export_hf of Gemma 3 and PaliGemma 2: the folder loads in transformers (AutoModelForImageTextToText,
AutoProcessor), its processor writes our ids and pixels, and its logits on them are ours (tiny models, float64)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    Gemma3ForConditionalGeneration,
    PaliGemmaForConditionalGeneration,
)

import lightning_mm
from lightning_mm.data.segments import encode_conversation
from lightning_mm.families.gemma3.zoo import TINY_GEMMA3_CONFIG
from lightning_mm.families.paligemma.zoo import TINY_PALIGEMMA_CONFIG
from tests.families.gemma_fixtures import hf_checkpoint, rel_err
from tests.families.gemma_processors import (
    BOI,
    EOI,
    PALI_IMAGE,
    SOFT,
    gemma3_processor,
    gemma_tokenizer,
    image,
    normalised,
    paligemma_processor,
    paligemma_tokenizer,
)


@pytest.fixture()
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _exported(tmp_path, config, hf_class, tokenizer, processor):
    """(transformers' model as saved, our module imported from it, the folder export_hf writes)."""
    path = tmp_path / "in"
    hf = hf_checkpoint(config, path, hf_class)
    processor.save_pretrained(path)
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    out = lightning_mm.export_hf(module, tmp_path / "out")
    return hf, module, out


def _load(out):
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float64).eval()
    processor = AutoProcessor.from_pretrained(
        out, image_processor=AutoImageProcessor.from_pretrained(out, backend="pil")
    )
    return model, processor


def _logits(network, ids, pixels, prefix_mask=None):
    hidden = network(ids, None, pixels, prefix_mask=prefix_mask)  # (1, T, H)
    logits = network.lm_head(hidden)
    cap = getattr(network, "logit_softcap", None)
    return cap * torch.tanh(logits / cap) if cap else logits


def test_gemma3_export_loads_with_our_ids_pixels_and_logits(float64, tmp_path):
    config = {**TINY_GEMMA3_CONFIG, "boi_token_index": BOI, "eoi_token_index": EOI, "image_token_index": SOFT}
    tok = gemma_tokenizer()
    hf, module, out = _exported(tmp_path, config, Gemma3ForConditionalGeneration, tok, gemma3_processor(tok))
    assert json.loads((out / "config.json").read_text())["model_type"] == "gemma3"
    model, processor = _load(out)
    assert type(processor).__name__ == "Gemma3Processor" and processor.image_seq_length == 16
    assert type(processor.image_processor).__name__ == "Gemma3ImageProcessorPil"
    layout, img = module.image_layout, image((40, 90), seed=3)
    inputs = processor(text=["Look at <start_of_image> now"], images=[img], return_tensors="pt")
    words = [tok.encode(t, add_special_tokens=False) for t in ("Look at ", " now")]
    ids = [tok.bos_token_id, *words[0], *layout.prompt_ids((40, 90)), *words[1]]
    assert inputs["input_ids"][0].tolist() == ids
    pixels = normalised(layout.prepare(img).tiles)  # (1, 3, 64, 64)
    torch.testing.assert_close(inputs["pixel_values"].double(), pixels, rtol=0, atol=1e-6)
    network = module.network.eval()
    with torch.no_grad():
        theirs = model(**inputs).logits
        before = hf(**inputs).logits
        ours = _logits(network, torch.tensor([ids]), pixels)
    assert rel_err(ours, theirs) < 1e-6 and rel_err(before, theirs) < 1e-6


def test_paligemma_export_loads_with_our_ids_pixels_and_logits(float64, tmp_path):
    tok = paligemma_tokenizer()
    text = {**TINY_PALIGEMMA_CONFIG["text_config"], "vocab_size": 1600}  # PaliGemmaProcessor adds 1152 loc/seg tokens
    config = {**TINY_PALIGEMMA_CONFIG, "image_token_id": PALI_IMAGE, "text_config": text}
    hf, module, out = _exported(tmp_path, config, PaliGemmaForConditionalGeneration, tok, paligemma_processor(tok))
    assert module.spec.template == "paligemma"
    model, processor = _load(out)
    assert type(processor).__name__ == "PaliGemmaProcessor" and processor.image_seq_length == 16
    layout, img = module.image_layout, image((50, 20), seed=4)
    inputs = processor(text=["<image>caption en"], images=[img], suffix=["a red bird"], return_tensors="pt")
    messages = [{"role": "user", "content": "<image>\ncaption en"}, {"role": "assistant", "content": "a red bird"}]
    enc = module.data_contract.template.render(messages)
    encoded = encode_conversation(enc, module.tokenizer, [layout.prompt_ids((50, 20))])
    assert inputs["input_ids"][0].tolist() == encoded.input_ids
    pixels = normalised(layout.prepare(img).tiles)  # (1, 3, 32, 32)
    torch.testing.assert_close(inputs["pixel_values"].double(), pixels, rtol=0, atol=1e-6)
    prefix = inputs["token_type_ids"] == 0  # (1, T) image + BOS + prefix + "\n"
    network = module.network.eval()
    with torch.no_grad():
        kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values", "token_type_ids")}
        theirs = model(**kwargs).logits
        before = hf(**kwargs).logits
        ours = _logits(network, inputs["input_ids"], pixels, prefix_mask=prefix)
    assert rel_err(ours, theirs) < 1e-6 and rel_err(before, theirs) < 1e-6
