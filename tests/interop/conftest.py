"""Tiny transformers LLaVA checkpoints made offline: CLIP + Llama, SigLIP + Qwen2 (tied embeddings)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    SiglipImageProcessor,
)

from tests.helpers import tiny_text_config, tiny_vision_config

ASSETS = Path(__file__).resolve().parents[1] / "assets"
IMAGE_TOKEN_ID = 4  # <image> in tests/assets/tokenizer
VOCAB = 416  # 400 tokens, padded
IMG, PATCH = 16, 8  # 2 x 2 = 4 patches per image


def vision_config(family: str):
    # SigLIP: gelu_pytorch_tanh, attention-pool head
    return tiny_vision_config(family, image_size=IMG, patch_size=PATCH)


def text_config(family: str):
    return tiny_text_config(family, vocab_size=VOCAB, max_position_embeddings=128)


PAIRS = {"clip-llama": ("clip", "llama", -2, "default"), "siglip-qwen2": ("siglip", "qwen2", -1, "full")}


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every 1-D parameter (norm weights, biases, class embedding) away from its init value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 or p.shape[:2] == (1, 1):
                p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make_hf_llava(pair: str, seed: int = 0) -> LlavaForConditionalGeneration:
    vision, text, layer, strategy = PAIRS[pair]
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=vision_config(vision).to_dict(),
        text_config=text_config(text).to_dict(),
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=4,  # 2 x 2 patches (CLIP: CLS dropped; SigLIP: none to drop)
        vision_feature_layer=layer,
        vision_feature_select_strategy=strategy,
        tie_word_embeddings=text == "qwen2",
    )
    model = LlavaForConditionalGeneration(config).to(torch.float64)
    perturb(model, seed)
    return model.eval()


def save_checkpoint(model: LlavaForConditionalGeneration, path: Path) -> Path:
    """``save_pretrained`` of the model and of a LlavaProcessor (test tokenizer, the family's image processor)."""
    model.save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    config = model.config
    if config.vision_config.model_type == "clip_vision_model":
        images = CLIPImageProcessor(size={"shortest_edge": IMG}, crop_size={"height": IMG, "width": IMG})
        extra = 1
    else:
        images = SiglipImageProcessor(size={"height": IMG, "width": IMG})
        extra = 0
    LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=extra,
    ).save_pretrained(path)
    return path


@pytest.fixture(params=sorted(PAIRS))
def hf_checkpoint(request, tmp_path):
    """(pair name, transformers model in float64, its save_pretrained directory with the test tokenizer)."""
    model = make_hf_llava(request.param)
    return request.param, model, save_checkpoint(model, tmp_path / request.param)


@pytest.fixture()
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def batch(pixel_dtype=torch.float64, seed: int = 0, image_tokens: int = 4) -> dict[str, torch.Tensor]:
    """Three right-padded samples: two images, one image, text only; (3, 3, IMG, IMG) normalised pixels."""
    gen = torch.Generator().manual_seed(seed)
    img = [IMAGE_TOKEN_ID] * image_tokens

    def text(n):
        return torch.randint(10, 400, (n,), generator=gen).tolist()

    rows = [
        [1, *text(2), *img, *text(3), *img, *text(2)],
        [1, *text(3), *img, *text(4)],
        [1, *text(6)],
    ]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    pixels = torch.randn(3, 3, IMG, IMG, generator=gen, dtype=pixel_dtype)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|."""
    return float((ours - theirs).abs().max() / theirs.abs().max())


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
