"""Images whose token count depends on their size: every place of the data pipeline uses each image's own count.

A toy layout splits wide images into two tiles, gives each tile ``height // 12`` image tokens and writes marker ids
around the image and after each tile, so a place that still assumes one count per image fails here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mm.data import (
    IGNORE_INDEX,
    FixedLayout,
    ImageLayout,
    ImageProcessor,
    LlavaDataModule,
    PreparedImage,
    SyntheticVQADataModule,
    VLMCollator,
    build_synthetic_tokenizer,
)
from lightning_mm.data.layout import image_token_counts

LLAVA_DIR = Path(__file__).resolve().parents[1] / "assets" / "llava"
TILE = 8
# (file, (height, width)) of the committed asset images
SIZES = {"blue_wide.png": (24, 48), "green_tall.png": (40, 20), "gray_square.png": (28, 28), "red_circle.png": (32, 32)}


class ToyLayout:
    """Wide images: two tiles (left and right half); ``height // 12`` image tokens per tile; markers around."""

    def __init__(self, image_token_id: int, start: int, row: int, end: int) -> None:
        self.image_token_id, self.start, self.row, self.end = image_token_id, start, row, end

    @staticmethod
    def tiles(size: tuple[int, int]) -> int:
        return 2 if size[1] > size[0] else 1

    def prepare(self, image: Image.Image) -> PreparedImage:
        n = self.tiles((image.height, image.width))
        step = image.width // n
        crops = [image.crop((k * step, 0, (k + 1) * step, image.height)).resize((TILE, TILE)) for k in range(n)]
        tiles = torch.stack([torch.from_numpy(np.array(c)).permute(2, 0, 1) for c in crops])  # (n, 3, 8, 8)
        return PreparedImage(tiles, (image.height, image.width))

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        per_tile = [self.image_token_id] * max(1, size[0] // 12) + [self.row]
        return [self.start, *per_tile * self.tiles(size), self.end]


@pytest.fixture
def layout(tokenizer) -> ToyLayout:
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    start, row, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>"))
    return ToyLayout(image_id, start, row, end)


def _record(rid: str, images: list[str], question: str = "What differs?") -> dict:
    text = "".join("<image>" for _ in images) + "\n" + question
    return {
        "id": rid,
        "image": [f"images/{p}" for p in images],
        "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "The size."}],
    }


@pytest.fixture
def data_file(write_jsonl):
    return write_jsonl(
        [
            _record("wide-tall", ["blue_wide.png", "green_tall.png"]),
            _record("square", ["gray_square.png"]),
            _record("wide", ["blue_wide.png"]),
            {"id": "text", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hi."}]},
            _record("round", ["red_circle.png"]),
        ]
    )


def _spans(ids: list[int], start: int, end: int) -> list[tuple[int, int]]:
    opens = [k for k, t in enumerate(ids) if t == start and k > 0]  # position 0 is BOS (same id as the marker)
    return [(a, ids.index(end, a) + 1) for a in opens]


def test_toy_layout_is_an_image_layout_and_fixed_layout_is_todays(layout, tokenizer):
    assert isinstance(layout, ImageLayout) and isinstance(FixedLayout(4, 7), ImageLayout)
    assert layout.prompt_ids((24, 48)) != layout.prompt_ids((40, 20))
    assert image_token_counts(layout, [(24, 48), (40, 20), (28, 28)], layout.image_token_id) == [4, 3, 2]
    config = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    fixed = FixedLayout(5, 9, ImageProcessor(config))
    image = Image.open(LLAVA_DIR / "images" / "blue_wide.png").convert("RGB")
    prepared = fixed.prepare(image)
    assert prepared.size == (24, 48) and torch.equal(prepared.tiles, ImageProcessor(config)(image).unsqueeze(0))
    assert fixed.prompt_ids((24, 48)) == fixed.prompt_ids((1, 1)) == [9] * 5


def test_each_placeholder_becomes_the_prompt_of_its_own_image(make_dataset, data_file, layout):
    ds = make_dataset(data_file, layout=layout, num_image_tokens=None)
    sample = ds[0]  # a wide then a tall image
    ids, labels = sample["input_ids"].tolist(), sample["labels"]
    spans = _spans(ids, layout.start, layout.end)
    expected = [layout.prompt_ids(SIZES["blue_wide.png"]), layout.prompt_ids(SIZES["green_tall.png"])]
    assert [ids[a:b] for a, b in spans] == expected
    for a, b in spans:  # image tokens and markers: never targets
        assert bool((labels[a:b] == IGNORE_INDEX).all())
    assert sample["image_sizes"].tolist() == [[24, 48], [40, 20]]
    assert sample["tiles_per_image"].tolist() == [2, 1]
    assert tuple(sample["pixel_values"].shape) == (3, 3, TILE, TILE) and sample["pixel_values"].dtype == torch.uint8
    assert tokenizer_text(ds, sample, spans[-1][1]).startswith("\nWhat differs?")


def tokenizer_text(ds, sample, start: int) -> str:
    return ds.tokenizer.decode(sample["input_ids"][start:])


def test_collator_writes_tiles_sizes_and_checks_each_images_count(make_dataset, data_file, layout):
    ds = make_dataset(data_file, layout=layout, num_image_tokens=None)
    samples = [ds[i] for i in range(len(ds))]
    collate = VLMCollator(0, "right", layout.image_token_id, layout=layout)
    batch = collate(samples)
    # wide+tall, square, wide, text-only, round: images in sample order, tiles in image order
    assert batch["image_counts"].tolist() == [2, 1, 1, 0, 1]
    assert batch["image_sizes"].tolist() == [[24, 48], [40, 20], [28, 28], [24, 48], [32, 32]]
    assert batch["tiles_per_image"].tolist() == [2, 1, 1, 2, 1]
    assert batch["image_sizes"].dtype == batch["tiles_per_image"].dtype == torch.long
    assert tuple(batch["pixel_values"].shape) == (7, 3, TILE, TILE)
    assert torch.equal(batch["pixel_values"][:3], samples[0]["pixel_values"])
    found = (batch["input_ids"] == layout.image_token_id).sum(dim=1).tolist()
    assert found == [4 + 3, 2, 4, 0, 2]
    with pytest.raises(ValueError, match="Sample 'wide-tall': 7 image tokens but 2 image"):
        VLMCollator(0, "right", layout.image_token_id, num_image_tokens=4)(samples)  # one count for every image
    short = dict(samples[2])
    keep = torch.ones_like(short["input_ids"], dtype=torch.bool)
    keep[int((short["input_ids"] == layout.image_token_id).nonzero()[0])] = False  # one image token less
    short["input_ids"], short["labels"] = short["input_ids"][keep], short["labels"][keep]
    with pytest.raises(ValueError, match="Sample 'wide': 3 image tokens but 1 image\\(s\\) of \\[4\\] tokens"):
        collate([samples[0], short])


def test_text_only_batch_has_no_image_keys(make_dataset, data_file, layout):
    ds = make_dataset(data_file, layout=layout, num_image_tokens=None)
    batch = VLMCollator(0, "right", layout.image_token_id, layout=layout)([ds[3]])
    assert batch["pixel_values"] is None and batch["image_sizes"] is None and batch["tiles_per_image"] is None


@pytest.mark.parametrize("into", ["image token", "end marker"])
def test_truncation_never_cuts_an_image_span_of_any_length(into, make_dataset, data_file, layout):
    full = make_dataset(data_file, layout=layout, num_image_tokens=None)[0]
    ids = full["input_ids"].tolist()
    a, b = _spans(ids, layout.start, layout.end)[1]  # the tall image's span
    cut = a + 2 if into == "image token" else b - 1  # b - 1: only the closing marker would be cut off
    ds = make_dataset(data_file, layout=layout, num_image_tokens=None, max_length=cut)
    assert ds[0] == {"id": "wide-tall", "skipped": ["truncated_image_span"]}
    kept = make_dataset(data_file, layout=layout, num_image_tokens=None, max_length=len(ids) - 1)
    assert kept[0]["input_ids"].tolist() == ids[:-1]  # a cut after the images keeps the sample


def test_length_grouping_uses_each_images_own_count(make_dataset, data_file, layout):
    ds = make_dataset(data_file, layout=layout, num_image_tokens=None)
    real = [len(ds[i]["input_ids"]) for i in range(len(ds))]
    lengths = ds.lengths.tolist()
    # "square", "wide" and "round" have the same text: their estimates differ by their image prompts exactly
    image_part = {i: len(layout.prompt_ids(SIZES[f])) for i, f in ((1, "gray_square.png"), (2, "blue_wide.png"))}
    image_part[4] = len(layout.prompt_ids(SIZES["red_circle.png"]))
    assert lengths[2] - lengths[1] == image_part[2] - image_part[1] == real[2] - real[1]
    assert lengths[4] - lengths[1] == image_part[4] - image_part[1] == real[4] - real[1]
    assert np.argmax(lengths) == np.argmax(real) == 0


def test_datamodules_take_the_layout_from_bind(tiny_module, layout, data_file, tokenizer):
    m = tiny_module
    dm = LlavaDataModule(train_path=str(data_file), image_folder=str(LLAVA_DIR), template="vicuna_v1", batch_size=5)
    dm.bind(
        dataclasses.replace(m.data_contract, tokenizer=tokenizer, image_token_id=layout.image_token_id, layout=layout)
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.sampler.items.sampler.lengths.tolist() == dm.train_dataset.lengths.tolist()
    batch = next(iter(loader))
    assert int(batch["tiles_per_image"].sum()) == batch["pixel_values"].shape[0] == 7
    assert loader.collate_fn.layout is layout


def test_synthetic_task_with_a_layout(tiny_module):
    tok = build_synthetic_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    start, row, end = (tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<pad>", "<|im_end|>"))
    toy = ToyLayout(image_id, start, row, end)
    dm = SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4)
    dm.bind(dataclasses.replace(tiny_module.data_contract, tokenizer=tok, image_token_id=image_id, layout=toy))
    size = tuple(tiny_module.image_data_config["input_size"][1:])
    sample = dm._dataset(4, seed=0)[0]
    assert int((sample["input_ids"] == image_id).sum()) == size[0] // 12 != tiny_module.num_image_tokens
    assert sample["image_sizes"].tolist() == [list(size)] and tuple(sample["pixel_values"].shape) == (1, 3, 8, 8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["tiles_per_image"].tolist() == [1] * 4
    assert json.dumps(batch["image_sizes"].tolist()) == json.dumps([list(size)] * 4)
