"""recipes/paligemma: an imported PaliGemma trains from the recipe with activation checkpointing (prefix-LM masks
recomputed in backward), then predicts and chats with the prefix-LM pattern."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import PaliGemmaForConditionalGeneration

from lightning_mm.chat import ChatSession, load_chat_model
from lightning_mm.checkpoint.load import load_module
from lightning_mm.cli import main
from lightning_mm.data import LlavaDataModule
from lightning_mm.families.paligemma.zoo import TINY_PALIGEMMA_CONFIG
from tests.families.gemma_fixtures import hf_checkpoint
from tests.families.gemma_processors import PALI_IMAGE, paligemma_processor, paligemma_tokenizer
from tests.helpers import RECIPE_ON_LLAVA_ASSETS

RECIPE = Path(__file__).parents[2] / "recipes" / "paligemma" / "paligemma2_3b_224_lora.yaml"
IMAGES = Path(__file__).parents[1] / "assets" / "llava"


def _single_question_data(path: Path) -> Path:
    """PaliGemma's data: one question and one answer per sample (a prefix LM has one prefix)."""
    records = [
        {
            "id": f"q{k}",
            "image": f"images/{name}",
            "conversations": [
                {"from": "human", "value": "<image>\nanswer en what color is it?"},
                {"from": "gpt", "value": answer},
            ],
        }
        for k, (name, answer) in enumerate(
            [
                ("red_circle.png", "red"),
                ("blue_wide.png", "blue"),
                ("green_tall.png", "green"),
                ("gray_square.png", "gray"),
            ]
        )
    ]
    path.write_text(json.dumps(records))
    return path


@pytest.mark.slow
def test_recipe_trains_with_checkpointing_predicts_and_chats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tok = paligemma_tokenizer()
    source = tmp_path / "released"
    text = {**TINY_PALIGEMMA_CONFIG["text_config"], "vocab_size": 1600}  # PaliGemmaProcessor adds 1152 loc/seg tokens
    config = {**TINY_PALIGEMMA_CONFIG, "image_token_id": PALI_IMAGE, "text_config": text}
    hf_checkpoint(config, source, PaliGemmaForConditionalGeneration)
    paligemma_processor(tok).save_pretrained(source)
    data = _single_question_data(tmp_path / "data.json")
    rc = main(
        [
            "fit",
            "--config",
            str(RECIPE),
            "--model.init_args.model=hf:released",
            *RECIPE_ON_LLAVA_ASSETS,  # later arguments win: checkpointing on, the single-question data
            "--model.init_args.activation_checkpointing=true",
            f"--data.init_args.train_path={data}",
        ]
    )
    assert rc == 0
    checkpoint = next((tmp_path / "runs" / "paligemma2_3b_224_lora").rglob("last.ckpt"))
    module = load_module(checkpoint)
    assert module.network.attention_pattern.kind == "prefix_lm"
    assert module.data_contract.template.name == "paligemma"

    predict = LlavaDataModule(
        train_path=str(data), predict_path=str(data), image_folder=str(IMAGES), batch_size=2, num_workers=0
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    module.max_new_tokens = 3
    rows = [row for batch in trainer.predict(module, datamodule=predict) for row in batch]
    assert len(rows) == 4 and all(isinstance(r["prediction"], str) for r in rows)

    model = load_chat_model(str(checkpoint))
    session = ChatSession(model, [str(IMAGES / "images" / "red_circle.png")], max_new_tokens=3)
    ids = session.prompt_ids("answer en what color is it?")[0]
    image_id = model.contract.image_token_id
    n_image = int((ids == image_id).sum())
    assert n_image > 0 and bool((ids[:n_image] == image_id).all())  # the image tokens open the prompt
    assert isinstance(session.ask("answer en what color is it?"), str)
    assert torch.isfinite(next(module.network.parameters())).all()
