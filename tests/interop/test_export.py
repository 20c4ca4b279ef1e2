"""Export: import -> one LoRA training step on every component -> export_hf -> transformers loads it, same outputs."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

import lightning_mm
from lightning_mm.callbacks import Placement
from lightning_mm.cli import main
from lightning_mm.data import ImageProcessor
from tests.interop.conftest import ASSETS, IMAGE_TOKEN_ID, batch

LORA = {"vision": Placement("lora", r=2, alpha=4.0), "projector": Placement("lora", r=2, alpha=4.0)}
LORA["llm"] = Placement("lora", r=4, alpha=8.0)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _train_one_step(module) -> None:
    b = batch(seed=1)
    labels = b["input_ids"].masked_fill((b["attention_mask"] == 0) | (b["input_ids"] == IMAGE_TOKEN_ID), -100)
    optimizer = torch.optim.AdamW(module.param_groups(), lr=0.05)
    loss_sum, n = module.compute_loss(module(b), labels)
    (loss_sum / n).backward()
    optimizer.step()


@pytest.fixture()
def exported(hf_checkpoint, float64, tmp_path, caplog):
    pair, _, path = hf_checkpoint
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    for component, placement in LORA.items():
        module.set_placement(component, placement)
    _train_one_step(module)
    lora_b = [p for n, p in module.named_parameters() if ".lora_B." in n]
    assert {n.split(".")[1] for n, _ in module.named_parameters() if ".lora_B." in n} == set(LORA)
    assert all(p.abs().max() > 0 for p in lora_b)  # the step moved every adapter away from its zero init
    out = lightning_mm.export_hf(module, tmp_path / "export")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        hf, info = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float64, output_loading_info=True)
    return pair, module.network.eval(), hf.eval(), info, caplog.records, out


def test_transformers_loads_the_export_without_key_warnings(exported):
    _, _, _, info, records, _ = exported
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    noisy = [r.getMessage() for r in records if any(w in r.getMessage().lower() for w in ("missing", "unexpected"))]
    assert not noisy


def test_exported_logits_equal_ours(exported):
    pair, net, hf, _, _, _ = exported
    b = batch()
    with torch.no_grad():
        ours = net.lm_head(net(b["input_ids"], b["attention_mask"], b["pixel_values"]))  # (B, T, V), LoRA unmerged
        theirs = hf(**b).logits  # (B, T, V)
    real = b["attention_mask"].bool()
    assert _rel_err(ours[real], theirs[real]) < 1e-6, pair


def test_greedy_generation_is_identical(exported):
    pair, net, hf, _, _, _ = exported
    b = batch()
    ids, mask = b["input_ids"][1:2, :12], b["attention_mask"][1:2, :12]  # one image, no padding
    pixels = b["pixel_values"][2:3]
    kwargs = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    ours = net.generate(ids, mask, pixels, **kwargs)  # (1, 8)
    theirs = hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, **kwargs)[:, ids.shape[1] :]
    assert ours.shape == (1, 8)
    assert torch.equal(ours, theirs), pair


def test_auto_processor_gives_our_pixel_values(hf_checkpoint, float64, tmp_path):
    _, _, path = hf_checkpoint
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    out = lightning_mm.export_hf(module, tmp_path / "export", image_aspect="crop")
    processor = AutoProcessor.from_pretrained(out)
    tower = module.network.vision
    ours_uint8 = ImageProcessor(module.image_data_config, aspect="crop")
    for png in ("blue_wide.png", "green_tall.png", "red_circle.png"):
        image = Image.open(ASSETS / "llava" / "images" / png).convert("RGB")
        ours = tower.normalize(ours_uint8(image).unsqueeze(0), dtype=torch.float64)  # (1, 3, H, W)
        theirs = processor.image_processor(image, return_tensors="pt")["pixel_values"].double()  # (1, 3, H, W)
        assert theirs.shape == ours.shape
        one_level = 1.0 / 255 / min(tower.pixel_std)
        assert (ours - theirs).abs().max() <= one_level + 1e-6, png
    text = processor(text="<image> hi", images=image, return_tensors="pt")
    assert int((text["input_ids"] == IMAGE_TOKEN_ID).sum()) == module.num_image_tokens


def test_cli_exports_a_lightning_checkpoint_in_transformers_format(hf_checkpoint, tmp_path):
    _, _, path = hf_checkpoint
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    for component, placement in LORA.items():
        module.set_placement(component, placement)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.05)
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "adapted.ckpt")
    out = tmp_path / "hf"
    assert main(["export", str(tmp_path / "adapted.ckpt"), str(out), "--format", "hf"]) == 0
    hf = LlavaForConditionalGeneration.from_pretrained(out).eval()
    b = batch(pixel_dtype=torch.float32)
    net = module.network.eval()
    with torch.no_grad():
        ours = net.lm_head(net(**b))
        theirs = hf(**b).logits
    real = b["attention_mask"].bool()
    assert _rel_err(ours[real], theirs[real]) < 1e-5  # float32


def test_zoo_components_model_exports_too(tmp_path):
    torch.manual_seed(0)
    module = lightning_mm.create_model("tiny-llava")  # CLIP-style timm tower, synthetic tokenizer
    out = lightning_mm.export_hf(module, tmp_path / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(out).eval()
    assert hf.config.vision_config.hidden_act == "quick_gelu" and hf.config.image_seq_length == 16
    tok = module.tokenizer
    ids = torch.tensor([[tok.bos_token_id or 1, *[module.image_token_id] * 16, 10, 11]])
    pixels = torch.randn(1, 3, 32, 32)
    net = module.network.eval()
    with torch.no_grad():
        ours = net.lm_head(net(ids, None, pixels))
        theirs = hf(input_ids=ids, pixel_values=pixels).logits
    assert _rel_err(ours, theirs) < 1e-5


@pytest.mark.parametrize(
    ("name", "overrides", "error"),
    [
        ("tiny-dinov2-reg", {}, r"4 register tokens.*cannot represent it"),
        ("tiny-llava", {"projector": "linear"}, r"Linear -> GELU -> Linear"),
        ("tiny-llava", {"projector": "mlp3x_gelu"}, r"Linear -> GELU -> Linear"),
        ("tiny", {}, r"matches no transformers tower layout"),
    ],
)
def test_what_transformers_llava_cannot_represent_is_a_clear_error(name, overrides, error, tmp_path):
    module = lightning_mm.create_model(name, **overrides)
    with pytest.raises(ValueError, match=error):
        lightning_mm.export_hf(module, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # refused before anything is written
