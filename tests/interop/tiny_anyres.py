"""Tiny transformers LLaVA-NeXT / LLaVA-OneVision models made offline, and batches of images of several sizes.

Tiles are 16 px with 4 px patches: 4 x 4 = 16 tokens per tile, so unpadding and OneVision's cap cut real rows and
columns. NeXT: CLIP (CLS dropped, layer -2) + Llama, LLaVA-NeXT's pinpoint pattern scaled down; OneVision: SigLIP (all
tokens, layer -1) + Qwen2 with tied embeddings, every grid up to 3 x 3 and the cap at 4 tiles (``anyres_max_4``) so that
large grids are downsampled.
"""

from __future__ import annotations

import torch
from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
)

from lightning_mm.families.llava_next.geometry import AnyResGeometry, anyres_token_count, num_tiles, parse_max_tiles
from tests.helpers import tiny_text_config, tiny_vision_config
from tests.interop.conftest import IMAGE_TOKEN_ID, VOCAB, perturb

TILE, PATCH = 16, 4
NEXT_PINPOINTS = [[16, 32], [32, 16], [32, 32], [48, 16], [16, 48]]
OV_PINPOINTS = [[16 * r, 16 * c] for r in (1, 2, 3) for c in (1, 2, 3)]
OV_ASPECT = "anyres_max_4"
# (height, width): square, wide, tall, odd sizes; each needs several tiles and most need unpadding
SIZES = [(30, 30), (20, 50), (45, 17), (37, 61)]


def _vision(family: str) -> dict:
    no_head = {} if family == "clip" else {"vision_use_head": False}
    return tiny_vision_config(family, image_size=TILE, patch_size=PATCH, **no_head).to_dict()


def _text(family: str) -> dict:
    return tiny_text_config(family, vocab_size=VOCAB, max_position_embeddings=512).to_dict()


def make_hf(family: str, seed: int = 0):
    """A float64 transformers model of ``family`` (``next`` or ``onevision``), 1-D parameters perturbed."""
    torch.manual_seed(seed)
    if family == "next":
        config = LlavaNextConfig(
            vision_config=_vision("clip"),
            text_config=_text("llama"),
            image_token_index=IMAGE_TOKEN_ID,
            image_grid_pinpoints=NEXT_PINPOINTS,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
        model = LlavaNextForConditionalGeneration(config)
    else:
        config = LlavaOnevisionConfig(
            vision_config=_vision("siglip"),
            text_config=_text("qwen2"),
            image_token_index=IMAGE_TOKEN_ID,
            video_token_index=5,
            image_grid_pinpoints=OV_PINPOINTS,
            vision_aspect_ratio=OV_ASPECT,
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            tie_word_embeddings=True,
        )
        model = LlavaOnevisionForConditionalGeneration(config)
    model = model.to(torch.float64)
    perturb(model, seed)
    return model.eval()


def geometry(family: str) -> AnyResGeometry:
    if family == "next":
        return AnyResGeometry(tuple(map(tuple, NEXT_PINPOINTS)), TILE, TILE // PATCH)
    return AnyResGeometry(tuple(map(tuple, OV_PINPOINTS)), TILE, TILE // PATCH, parse_max_tiles(OV_ASPECT))


def anyres_batch(family: str, seed: int = 0, tiled: bool = True) -> dict[str, torch.Tensor]:
    """Three right-padded samples: two images, two images, text only; the four images of :data:`SIZES`.

    Image-token counts come from :func:`anyres_token_count`; transformers raises if its own count differs. With
    ``tiled=False`` every image is its base view alone (OneVision's multi-image mode).
    """
    gen = torch.Generator().manual_seed(seed)
    geo = geometry(family)
    sizes = SIZES
    images = [[IMAGE_TOKEN_ID] * anyres_token_count(s, geo, tiled) for s in sizes]

    def text(n):
        return torch.randint(10, 400, (n,), generator=gen).tolist()

    rows = [
        [1, *text(2), *images[0], *text(3), *images[1], *text(2)],
        [1, *text(3), *images[2], *text(1), *images[3], *text(4)],
        [1, *text(6)],
    ]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    tiles = [num_tiles(s, geo) if tiled else 1 for s in sizes]
    pixels = torch.randn(sum(tiles), 3, TILE, TILE, generator=gen, dtype=torch.float64)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "image_sizes": torch.tensor(sizes, dtype=torch.long),
        "tiles_per_image": torch.tensor(tiles, dtype=torch.long),
    }
