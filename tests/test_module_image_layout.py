"""Images whose token count depends on their size, end to end: the module's layout -> data -> network -> generation.

A tiny LLaVA-NeXT (any-resolution tiling) and a tiny SmolVLM (image splitting with row/column markers) train under a
Trainer on LLaVA-format records whose images have different sizes, validate with generation and predict. Each batch's
image-token runs are the ones the model's layout writes for each image of its size (and the layout tests hold those
equal to transformers' processors), and the network reads every tile.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from lightning_mm import MultimodalModule
from lightning_mm.data import LlavaDataModule
from lightning_mm.data.layout import sample_layout
from lightning_mm.evaluation import generate_last_answers, sample_images
from lightning_mm.families.llava_next.layout import AnyResLayout
from lightning_mm.families.smolvlm.layout import SmolVLMLayout
from tests.interop.smolvlm_fixtures import make_hf, save_checkpoint, smolvlm_tokenizer

ASSETS = Path(__file__).resolve().parent / "assets"
RECORDS = str(ASSETS / "llava" / "llava_tiny.json")


def runs(ids: list[int], token: int) -> list[int]:
    """Lengths of the maximal runs of ``token`` in ``ids``, in order."""
    out, n = [], 0
    for t in [*ids, None]:
        if t == token:
            n += 1
        elif n:
            out, n = [*out, n], 0
    return out


def expected_runs(layout, sizes: list[list[int]], token: int) -> list[int]:
    return [r for size in sizes for r in runs(layout.prompt_ids(tuple(size)), token)]


class RecordBatches(L.Callback):
    def __init__(self) -> None:
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch)


def check_batch(batch: dict, layout, token: int) -> list[int]:
    """Each sample's image-token runs and tiles are what the layout gives its images; returns the per-image counts."""
    counts, sizes, tiles = batch["image_counts"].tolist(), batch["image_sizes"], batch["tiles_per_image"]
    assert batch["pixel_values"].shape[0] == int(tiles.sum()) and len(sizes) == len(tiles) == sum(counts)
    per_image, offset = [], 0
    for b, n in enumerate(counts):
        mine, own = sizes[offset : offset + n].tolist(), sample_layout(layout, n)
        ids = batch["input_ids"][b][batch["attention_mask"][b].bool()].tolist()
        assert runs(ids, token) == expected_runs(own, mine, token)
        for i, size in enumerate(mine):
            assert int(tiles[offset + i]) == len(own.prepare(Image.new("RGB", size[::-1])).tiles)
            per_image.append(own.prompt_ids(tuple(size)).count(token))
        offset += n
    return per_image


@pytest.fixture(scope="module")
def smolvlm_checkpoint(tmp_path_factory) -> str:
    path = save_checkpoint(make_hf("smolvlm"), smolvlm_tokenizer(), tmp_path_factory.mktemp("smolvlm") / "ckpt")
    return f"hf:{path}"


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision", "smolvlm"])
def test_size_dependent_layouts_train_validate_and_predict(family, smolvlm_checkpoint, tmp_path, quiet_trainer):
    torch.manual_seed(0)
    if family.startswith("llava"):
        module = MultimodalModule(f"tiny-{family.replace('_', '-')}",
                                  model_overrides={"tokenizer": str(ASSETS / "tokenizer")},
                                  eval_generate=True, max_new_tokens=3)  # fmt: skip
        layout_cls = AnyResLayout
    else:
        module = MultimodalModule(smolvlm_checkpoint, eval_generate=True, max_new_tokens=3)
        layout_cls = SmolVLMLayout
    layout, token = module.image_layout, module.image_token_id
    assert isinstance(layout, layout_cls)
    dm = LlavaDataModule(train_path=RECORDS, val_path=RECORDS, predict_path=RECORDS, image_folder=str(ASSETS / "llava"),
                         batch_size=8, max_length=1024, group_by_length=False)  # fmt: skip
    recorder = RecordBatches()
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[recorder],
                            default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, dm)
    assert dm.layout is layout and trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "val/gen/exact_match" in trainer.callback_metrics  # validation generated its answers
    per_image = [n for batch in recorder.batches for n in check_batch(batch, layout, token)]
    assert len(set(per_image)) > 1  # the images really take different numbers of tokens
    first = recorder.batches[0]
    assert max(first["tiles_per_image"].tolist()) > 1
    if family == "llava_onevision":  # the sample with two images reads them untiled, single images are tiled
        groups = first["tiles_per_image"].split(first["image_counts"].tolist())
        several = [g.tolist() for g in groups if len(g) > 1]
        assert several and all(t == 1 for g in several for t in g)
        assert all(int(g[0]) > 1 for g in groups if len(g) == 1)

    # generation of a subset of the samples takes their own tiles: the same answers as in the whole batch
    batch = next(iter(dm.val_dataloader()))
    check_batch(batch, layout, token)
    module.eval()
    stops = module.stop_token_ids
    whole = generate_last_answers(module.network, module.tokenizer, batch, stops, 3)
    last = max(b for b, n in enumerate(batch["image_counts"].tolist()) if n)  # its tiles are not the first ones
    alone = generate_last_answers(module.network, module.tokenizer, batch, stops, 3, rows=[last])
    assert alone["generated_ids"] == [whole["generated_ids"][whole["rows"].index(last)]]

    rows = [r for out in trainer.predict(module, datamodule=dm) for r in out]
    assert len(rows) == len(dm.predict_dataset) and all(isinstance(r["prediction"], str) for r in rows)


def test_sample_images_selects_every_tile_of_the_chosen_samples():
    pixels = torch.arange(7).view(7, 1, 1, 1).expand(7, 3, 2, 2)  # (N_tiles, 3, H, W), tile t holds value t
    batch = {
        "pixel_values": pixels,
        "image_counts": torch.tensor([1, 0, 2]),  # sample 0: image 0; sample 2: images 1 and 2
        "image_sizes": torch.tensor([[10, 20], [30, 40], [50, 60]]),
        "tiles_per_image": torch.tensor([3, 1, 3]),
    }
    tiles, sizes, per = sample_images(batch, [2])
    assert tiles[:, 0, 0, 0].tolist() == [3, 4, 5, 6] and sizes.tolist() == [[30, 40], [50, 60]]
    assert per.tolist() == [1, 3]
    tiles, sizes, per = sample_images(batch, [0, 1])
    assert tiles[:, 0, 0, 0].tolist() == [0, 1, 2] and per.tolist() == [3]
    assert sample_images(batch, [1]) == (None, None, None)
    fixed = {"pixel_values": pixels[:3], "image_counts": torch.tensor([2, 1])}  # no tile keys: one tile per image
    assert sample_images(fixed, [1])[0][:, 0, 0, 0].tolist() == [2]
