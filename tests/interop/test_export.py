"""Export: import -> one LoRA training step on every component -> export_hf -> transformers loads it, same outputs."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import lightning_mm
from lightning_mm.callbacks import Placement
from lightning_mm.chat import load_chat_model
from lightning_mm.cli import main
from lightning_mm.data import ImageProcessor, SyntheticVQADataModule
from lightning_mm.families.llava.processor import hf_image_processor
from lightning_mm.interop.export import to_hf_model
from tests.interop.conftest import (
    ASSETS,
    IMAGE_TOKEN_ID,
    PAIRS,
    batch,
    copy_dir,
    make_hf_llava,
    rel_err,
    save_checkpoint,
)

LORA = {"vision": Placement("lora", r=2, alpha=4.0), "projector": Placement("lora", r=2, alpha=4.0)}
LORA["llm"] = Placement("lora", r=4, alpha=8.0)


def _train_one_step(module) -> None:
    b = batch(seed=1)
    labels = b["input_ids"].masked_fill((b["attention_mask"] == 0) | (b["input_ids"] == IMAGE_TOKEN_ID), -100)
    optimizer = torch.optim.AdamW(module.param_groups(), lr=0.05)
    loss_sum, n = module.compute_loss(module(b), labels)
    (loss_sum / n).backward()
    optimizer.step()


class _Messages(logging.Handler):
    """Collects what transformers logs (its logger does not propagate to the root logger, so caplog sees nothing)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load(out, **kwargs):
    """(model, loading info, messages transformers logged while loading)."""
    handler = _Messages()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        model, info = LlavaForConditionalGeneration.from_pretrained(out, output_loading_info=True, **kwargs)
    finally:
        logger.removeHandler(handler)
    return model.eval(), info, handler.messages


@pytest.fixture(scope="module", params=sorted(PAIRS))
def exported(request, tmp_path_factory):
    """Import -> LoRA on every component -> one training step -> export_hf -> transformers' from_pretrained."""
    pair = request.param
    root = tmp_path_factory.mktemp(pair)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        path = save_checkpoint(make_hf_llava(pair), root / "hf")
        module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
        for component, placement in LORA.items():
            module.set_placement(component, placement)
        _train_one_step(module)
        adapters = {n: p for n, p in module.named_parameters() if ".lora_B." in n}
        assert {n.split(".")[1] for n in adapters} == set(LORA)
        assert all(p.abs().max() > 0 for p in adapters.values())  # the step moved every adapter off its zero init
        out = lightning_mm.export_hf(module, root / "export")
        hf, info, messages = _load(out, dtype=torch.float64)
    finally:
        torch.set_default_dtype(previous)
    return pair, module.network.eval(), hf, info, messages, out


def test_transformers_loads_the_export_without_key_warnings(exported, tmp_path):
    _, _, _, info, messages, out = exported
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not [m for m in messages if any(w in m for w in ("MISSING", "UNEXPECTED", "MISMATCH"))], messages
    # the check has teeth: the same folder with one tensor renamed is reported
    broken = copy_dir(out, tmp_path / "broken")
    state = load_file(broken / "model.safetensors")
    state["multi_modal_projector.linear_9.bias"] = state.pop("multi_modal_projector.linear_1.bias")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    _, info, messages = _load(broken)
    assert info["missing_keys"] and any("MISSING" in m and "UNEXPECTED" in m for m in messages)


def test_exported_logits_equal_ours(exported):
    pair, net, hf, _, _, _ = exported
    b = batch()
    with torch.no_grad():
        ours = net.lm_head(net(b["input_ids"], b["attention_mask"], b["pixel_values"]))  # (B, T, V), LoRA unmerged
        theirs = hf(**b).logits  # (B, T, V)
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-6, pair


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


def _levels(pixels: torch.Tensor, tower) -> torch.Tensor:
    """Normalised (1, 3, H, W) pixels back to uint8 levels (0..255, float)."""
    mean = torch.tensor(tower.pixel_mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(tower.pixel_std, dtype=torch.float64).view(1, 3, 1, 1)
    return (pixels.double() * std + mean) * 255


PNGS = ("blue_wide.png", "green_tall.png", "red_circle.png", "yellow_cross.png")


@pytest.mark.parametrize("aspect", ["crop", "resize"])
def test_auto_processor_gives_our_pixel_values(hf_checkpoint, float64, tmp_path, aspect):
    _, _, path = hf_checkpoint
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True, image_aspect=aspect)
    out = lightning_mm.export_hf(module, tmp_path / "export")  # the processor reproduces the model's image_aspect
    tower = module.network.vision
    ours_uint8 = ImageProcessor(module.image_data_config, aspect=aspect)
    exact = AutoProcessor.from_pretrained(out, backend="pil")  # PIL resampling, as our pipeline
    default = AutoProcessor.from_pretrained(out)  # torchvision resampling
    for png in PNGS:
        image = Image.open(ASSETS / "llava" / "images" / png).convert("RGB")
        ours = ours_uint8(image).unsqueeze(0).double()  # (1, 3, H, W) uint8 levels
        theirs = _levels(exact.image_processor(image, return_tensors="pt")["pixel_values"], tower)
        assert theirs.shape == ours.shape
        assert (theirs - ours).abs().max() < 1e-3, png  # the same uint8 image
        theirs = _levels(default.image_processor(image, return_tensors="pt")["pixel_values"], tower)
        assert (theirs - ours).abs().max() <= 2 + 1e-3, png  # torchvision's bicubic rounds a few pixels otherwise
    text = default(text="<image> hi", images=image, return_tensors="pt")
    assert int((text["input_ids"] == IMAGE_TOKEN_ID).sum()) == module.num_image_tokens


@pytest.mark.parametrize("aspect", ["crop", "resize"])
def test_released_image_processor_settings_are_reproduced_at_336(aspect):
    module = lightning_mm.create_model("llava-1.5-7b", device="meta")
    config = module.image_data_config
    assert config["input_size"] == (3, 336, 336) and config["crop_pct"] == 1.0
    ours_uint8 = ImageProcessor(config, aspect=aspect)
    theirs_processor = hf_image_processor(config, aspect)
    pil = CLIPImageProcessorPil(**theirs_processor.to_dict())
    std = torch.tensor(config["std"], dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor(config["mean"], dtype=torch.float64).view(1, 3, 1, 1)
    for png in PNGS:
        image = Image.open(ASSETS / "llava" / "images" / png).convert("RGB")
        ours = ours_uint8(image).unsqueeze(0).double()  # (1, 3, 336, 336)
        theirs = (torch.as_tensor(pil(image, return_tensors="pt")["pixel_values"]).double() * std + mean) * 255
        assert theirs.shape == ours.shape == (1, 3, 336, 336)
        assert (theirs - ours).abs().max() < 1e-3, png


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
    assert (
        main(
            ["export", str(tmp_path / "adapted.ckpt"), str(tmp_path / "bf16"), "--format", "hf", "--dtype", "bfloat16"]
        )
        == 0
    )
    assert all(
        p.dtype == torch.bfloat16 for p in LlavaForConditionalGeneration.from_pretrained(tmp_path / "bf16").parameters()
    )
    b = batch(pixel_dtype=torch.float32)
    net = module.network.eval()
    with torch.no_grad():
        ours = net.lm_head(net(**b))
        theirs = hf(**b).logits
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-5  # float32


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
        in_memory = to_hf_model(net, "llava")(
            input_ids=ids, pixel_values=pixels
        ).logits  # shares our weights, runs as is
    assert rel_err(ours, theirs) < 1e-5
    assert rel_err(ours, in_memory) < 1e-5


@pytest.mark.parametrize(
    ("name", "overrides", "error"),
    [
        ("tiny-dinov2-reg", {}, r"4 register tokens.*cannot represent it"),
        ("tiny-llava", {"projector": "linear"}, r"Linear -> GELU -> Linear"),
        ("tiny-llava", {"projector": "mlp3x_gelu"}, r"Linear -> GELU -> Linear"),
        ("tiny", {"vision_model": "vit_tiny_patch16_224"}, r"matches no transformers tower layout"),
    ],
)
def test_what_transformers_llava_cannot_represent_is_a_clear_error(name, overrides, error, tmp_path):
    module = lightning_mm.create_model(name, **overrides)
    with pytest.raises(ValueError, match=error):
        lightning_mm.export_hf(module, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # refused before anything is written


def test_cli_hf_options_are_refused_with_the_parts_format(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "x.ckpt"), str(tmp_path / "out"), "--dtype", "bfloat16"])
    assert "--hf-model-type and --dtype apply to --format hf only" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "x.ckpt"), str(tmp_path / "out"), "--format", "hf"]) == 2
    assert "x.ckpt" in capsys.readouterr().err  # a missing checkpoint is named, without a traceback


@pytest.mark.parametrize("template", ["chatml", "vicuna_v1"])
def test_the_trained_chat_template_travels_with_the_export(template, tmp_path):
    torch.manual_seed(0)
    module = lightning_mm.create_model("tiny-llava", template=template)
    out = lightning_mm.export_hf(module, tmp_path / "hf")
    # a Llama-based LLaVA would otherwise be read as vicuna_v1, whatever it was trained with
    assert lightning_mm.get_spec(f"hf:{out}").template == template


@pytest.mark.parametrize("aspect", ["pad", "resize"])
def test_chat_and_export_use_the_image_aspect_the_model_was_trained_with(tmp_path, aspect):
    """No flag: the checkpoint's ``image_aspect`` reaches chat, the parts export and transformers' image processor."""
    L.seed_everything(0, verbose=False)
    module = lightning_mm.MultimodalModule(model="tiny-llava", image_aspect=aspect)
    data = SyntheticVQADataModule(train_samples=8, val_samples=4, batch_size=4)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    contract = load_chat_model(str(ckpt)).contract
    assert contract.image_aspect == aspect and contract.layout.processor.aspect == aspect
    assert main(["export", str(ckpt), str(tmp_path / "parts")]) == 0
    assert load_chat_model(str(tmp_path / "parts")).contract.layout.processor.aspect == aspect
    assert main(["export", str(ckpt), str(tmp_path / "hf"), "--format", "hf"]) == 0
    written = AutoProcessor.from_pretrained(tmp_path / "hf").image_processor
    expected = hf_image_processor(module.image_data_config, aspect)
    assert written.size == expected.size and bool(getattr(written, "do_pad", False)) == (aspect == "pad")
