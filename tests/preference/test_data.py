"""Pair samples and their collation: one prompt, its images once, two final answers."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightning_mm.data.collate import VLMCollator
from lightning_mm.preference import PreferenceDataModule, SyntheticPreferenceDataModule
from lightning_mm.preference.data import PreferenceCollator, make_pair, prompt_length
from lightning_mm.preference.records import PreferencePairDataset

PROMPT = [1, 2, 3]
IMG = {"pixel_values": torch.zeros(1, 3, 4, 4)}


def _row(answer: list[int], prompt: list[int] = PROMPT) -> tuple[list[int], list[int]]:
    return prompt + answer, [-100] * len(prompt) + answer


def test_only_the_final_answer_is_scored():
    ids = [1, 7, 8, 2, 9, 9]
    labels = [-100, 7, 8, -100, 9, 9]  # an earlier assistant turn (7, 8), then the final answer
    pair = make_pair("s0", (ids, labels), (ids[:4] + [5], labels[:4] + [5]))
    assert pair["chosen_labels"].tolist() == [-100, -100, -100, -100, 9, 9]
    assert prompt_length(labels) == 4


def test_differing_prompts_name_the_sample():
    with pytest.raises(ValueError, match=r"Sample 'rec-7'.*prompts differ at token 1"):
        make_pair("rec-7", _row([4, 5]), _row([6], prompt=[1, 9, 3]))


def test_answer_empty_after_truncation_names_the_sample():
    with pytest.raises(ValueError, match=r"Sample 'rec-3': the chosen answer is empty within max_length=3"):
        make_pair("rec-3", _row([4]), _row([5, 6]), max_length=3)
    with pytest.raises(ValueError, match=r"Sample 'rec-4': the rejected answer is empty$"):
        make_pair("rec-4", _row([5]), _row([]))


def test_collated_rows_chosen_then_rejected_images_once():
    pairs = [
        make_pair("a", _row([4, 5]), _row([6]), images=IMG),
        make_pair("b", _row([7]), _row([8, 9, 9]), images=IMG),
    ]
    batch = PreferenceCollator(VLMCollator(0))(pairs)
    assert batch["pairs"] == 2 and batch["id"] == ["a", "b"]
    assert batch["input_ids"].shape == (4, 6) and batch["labels"].shape == (4, 6)
    assert batch["input_ids"][:, :3].tolist() == [PROMPT] * 4
    assert batch["labels"][0].tolist() == [-100, -100, -100, 4, 5, -100]
    assert batch["labels"][3].tolist() == [-100, -100, -100, 8, 9, 9]
    assert batch["attention_mask"].sum(dim=1).tolist() == [5, 4, 4, 6]
    assert batch["pixel_values"].shape[0] == 2  # one image per pair, not per row


def test_synthetic_pairs_share_prompt_and_image(tiny_module):
    dm = SyntheticPreferenceDataModule(train_samples=4, val_samples=4, batch_size=4, question_types=["color"])
    dm.bind(tiny_module.data_contract)
    batch = next(iter(dm.val_dataloader()))
    assert batch["pairs"] == 4 and batch["pixel_values"].shape[0] == 4
    assert all(c != r for c, r in zip(batch["chosen"], batch["rejected"], strict=True))
    labels = batch["labels"]
    for b in range(4):
        start = int((labels[b] != -100).nonzero()[0])
        assert batch["input_ids"][b, :start].tolist() == batch["input_ids"][b + 4, :start].tolist()


def test_llava_and_trl_records_give_the_same_pair(tiny_module, tmp_path):
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "red.png")
    llava = {
        "id": "p1",
        "image": "red.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat colour is the shape?"}],
        "chosen": "red",
        "rejected": "blue",
    }
    trl = {
        "id": "p1",
        "images": ["red.png"],
        "prompt": "<image>\nWhat colour is the shape?",
        "chosen": "red",
        "rejected": [{"role": "assistant", "content": "blue"}],
    }
    bad = {"id": "p2", "prompt": "What colour?", "chosen": "red", "rejected": ""}
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in (llava, trl, bad)))
    contract = tiny_module.data_contract
    ds = PreferencePairDataset(
        str(tmp_path / "pairs.jsonl"), contract.tokenizer, contract.layout, image_folder=str(tmp_path)
    )
    a, b = ds[0], ds[1]
    for key in ("chosen_input_ids", "rejected_input_ids", "chosen_labels", "rejected_labels", "pixel_values"):
        assert torch.equal(a[key], b[key]), key
    assert (a["chosen_input_ids"] == contract.image_token_id).sum() == contract.num_image_tokens
    with pytest.raises(ValueError, match=r"pairs.jsonl:3: record 'p2': 'rejected' must be a non-empty string"):
        ds[2]
    dm = PreferenceDataModule(str(tmp_path / "pairs.jsonl"), image_folder=str(tmp_path), skip_bad_records=True)
    dm.bind(contract)
    batch = next(iter(DataLoader(dm.dataset(dm.train_path), batch_size=3, collate_fn=dm.collator())))
    assert batch["pairs"] == 2 and len(batch["skipped"]) == 1 and "p2" in batch["skipped"][0]
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[0] == 2
