"""Image paths of LLaVA records stay inside the image folder; images that cannot be read in a tiling layout's length
estimate (decompression bombs) are named by record, and EXIF-rotated images count their upright size."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from lightning_mm.data import BadSampleError
from lightning_mm.families.llava_next.layout import AnyResLayout
from tests.data.conftest import LLAVA_DIR
from tests.data.test_anyres_layout import DATA_CONFIG, GEOMETRY, _photo
from tests.models.test_anyres import IMAGE_TOKEN_ID


def _record(rid: str, image: str) -> dict:
    question = {"from": "human", "value": "<image>\nWhat is it?"}
    return {"id": rid, "image": image, "conversations": [question, {"from": "gpt", "value": "A shape."}]}


@pytest.fixture
def folders(tmp_path):
    """(image folder with one image, an image outside it, a link inside the folder pointing to that image)."""
    root, outside = tmp_path / "root", tmp_path / "outside.png"
    (root / "images").mkdir(parents=True)
    png = (LLAVA_DIR / "images" / "red_circle.png").read_bytes()
    (root / "images" / "in.png").write_bytes(png)
    outside.write_bytes(png)
    os.symlink(outside, root / "images" / "link.png")
    os.symlink(root / "images" / "in.png", root / "images" / "inner_link.png")  # a link that stays inside is fine
    return root, outside


def _rows(outside) -> list[dict]:
    return [
        _record("inside", "images/in.png"),
        _record("climbs-out", "images/../../outside.png"),
        _record("absolute", str(outside)),
        _record("link-out", "images/link.png"),
        _record("link-in", "images/inner_link.png"),
        _record("dot-dot-inside", "images/../images/in.png"),
    ]


@pytest.mark.parametrize(("row", "where"), [(1, 2), (2, 3)])
def test_a_path_that_leaves_the_folder_is_an_error_naming_the_record(row, where, make_dataset, write_jsonl, folders):
    root, outside = folders
    rows = _rows(outside)
    path = write_jsonl([rows[0], rows[row]])
    with pytest.raises(BadSampleError, match="leaves the image folder") as err:
        make_dataset(path, image_folder=str(root))
    assert err.value.reason == "image_outside_folder"
    assert f"{path}:2: record {rows[row]['id']!r}" in str(err.value)


def test_a_link_out_of_the_folder_is_an_error_naming_the_record(make_dataset, write_jsonl, folders):
    root, outside = folders
    path = write_jsonl([_rows(outside)[3]])
    ds = make_dataset(path, image_folder=str(root))
    with pytest.raises(BadSampleError, match=f"{path}:1: record 'link-out'.*outside.png.*outside the image folder"):
        ds[0]


def test_escapes_are_skipped_and_counted_once(make_dataset, write_jsonl, folders):
    root, outside = folders
    ds = make_dataset(write_jsonl(_rows(outside)), image_folder=str(root), on_bad_sample="skip")
    assert dict(ds.skip_counts) == {"image_outside_folder": 2}  # as written: counted when the file is read
    samples = [ds[i] for i in range(len(ds))]
    assert [s["id"] for s in samples if "input_ids" in s] == ["inside", "link-in", "dot-dot-inside"]
    assert [s["skipped"] for s in samples if "input_ids" not in s] == [["image_outside_folder"]]  # the link, once


def test_the_flag_accepts_every_path(make_dataset, write_jsonl, folders):
    root, outside = folders
    ds = make_dataset(write_jsonl(_rows(outside)), image_folder=str(root), allow_images_outside_folder=True)
    assert len(ds) == 6 and all("input_ids" in ds[i] for i in range(6))


@pytest.fixture
def tiled(make_dataset, write_jsonl, tmp_path):
    """Factory: a dataset of one record per image (name -> PIL image) under an any-resolution layout."""

    def make(images: dict, **kwargs):
        (tmp_path / "images").mkdir(exist_ok=True)
        for name, (image, save_kwargs) in images.items():
            image.save(tmp_path / "images" / name, **save_kwargs)
        path = write_jsonl([_record(name, f"images/{name}") for name in images])
        layout = AnyResLayout(GEOMETRY, DATA_CONFIG, IMAGE_TOKEN_ID)
        return make_dataset(path, image_folder=str(tmp_path), layout=layout, max_length=None, **kwargs), layout

    return make


def test_a_decompression_bomb_under_a_tiling_layout_is_named_like_any_unreadable_image(tiled, monkeypatch):
    ds, _ = tiled({"fine.png": (_photo(40, 90), {}), "bomb.png": (_photo(130, 47), {})})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 130 * 47 // 2 - 1)  # bomb.png is over twice the limit
    assert ds.lengths[1] < ds.lengths[0]  # the length estimate counts no image tokens for it, and does not raise
    with pytest.raises(BadSampleError, match=r"data.jsonl:2: record 'bomb.png'.*DecompressionBombError") as err:
        ds[1]
    assert err.value.reason == "image_unreadable"


def test_the_length_estimate_of_a_rotated_image_counts_its_upright_size(tiled):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored 90 x 40, shown 40 x 90
    ds, layout = tiled({"rotated.jpg": (_photo(90, 40).convert("RGB"), {"exif": exif})})
    sample = ds[0]
    assert tuple(sample["image_sizes"][0].tolist()) == (40, 90)
    assert ds.image_tokens(0) == len(layout.prompt_ids((40, 90))) != len(layout.prompt_ids((90, 40)))
    assert ds.lengths[0] > ds.image_tokens(0)  # text tokens on top
