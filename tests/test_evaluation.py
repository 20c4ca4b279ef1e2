"""Generation-based evaluation: prompts taken from teacher-forcing batches, and eval_generate on a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_mm import MultimodalModule
from lightning_mm.data import LlavaDataModule, LlavaDataset, SyntheticVQADataModule, VLMCollator
from lightning_mm.evaluation import last_answer_spans, left_pad_prompts, until_stop
from lightning_mm.metrics import VQAExactMatch

ASSETS = Path(__file__).parent / "assets"
X = -100


def test_last_answer_spans_find_the_last_run_of_supervised_labels():
    labels = torch.tensor(
        [
            [X, X, 5, 6, X, X, 7, 8, X],  # two answers: the prompt keeps the first one
            [X, 3, 4, X, X, X, X, X, X],  # right padding after the answer
            [X, X, X, X, X, X, X, X, X],  # nothing supervised
            [X, X, X, X, X, X, X, 9, 2],  # answer at the very end
        ]
    )
    start, end, has = last_answer_spans(labels)
    assert start.tolist() == [6, 1, 0, 7]
    assert end.tolist() == [8, 3, 0, 9]
    assert has.tolist() == [True, True, False, True]


def test_left_pad_prompts():
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    out, mask = left_pad_prompts(ids, torch.tensor([3, 1, 2]), pad_token_id=0)
    assert out.tolist() == [[1, 2, 3], [0, 0, 5], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert until_stop([4, 5, 2, 6], [2, 3]) == [4, 5]


def test_prompts_from_a_training_batch_are_the_prediction_prompts_of_llava_records():
    """Multi-turn, two-image, text-only and system-turn records: the prompt cut from the right-padded training batch
    equals what the dataset renders for generation (conversation up to the last answer), token for token, and the
    reference is the last answer."""
    torch.manual_seed(0)
    module = MultimodalModule(
        model="tiny", model_overrides={"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}
    )
    module.configure_model()
    module.max_new_tokens = 3
    kwargs = dict(
        image_folder=None,
        tokenizer=module.tokenizer,
        template="vicuna_v1",
        num_image_tokens=module.num_image_tokens,
        image_data_config=module.image_data_config,
        image_token_id=module.image_token_id,
        max_length=None,
    )
    train = LlavaDataset(ASSETS / "llava" / "llava_tiny.json", **kwargs)
    prompts = LlavaDataset(ASSETS / "llava" / "llava_tiny.json", generation=True, **kwargs)
    collate = VLMCollator(module.tokenizer.pad_token_id, "right", module.image_token_id, module.num_image_tokens)
    batch = collate([train[i] for i in range(len(train))])
    generated = module.generate_answers(batch)
    assert generated["rows"] == list(range(len(train)))
    for k in range(len(train)):
        expected = prompts[k]
        assert generated["prompt_ids"][k] == expected["input_ids"].tolist(), expected["id"]
        assert generated["references"][k] == [expected["answer"].strip()], expected["id"]
        assert len(generated["generated_ids"][k]) <= 3
    # a sub-batch keeps the images of its own samples only
    two = module.generate_answers(batch, rows=[2])  # the two-image record
    assert two["rows"] == [2] and two["prompt_ids"][0] == generated["prompt_ids"][2]


class _Outputs(Callback):
    def __init__(self) -> None:
        self.rows: list[tuple[bool, str, list[str], str | None, list[int], list[int]]] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        gen = outputs["generated"]
        for k, b in enumerate(gen["rows"]):
            row = (bool(outputs["answer_correct"][b]), gen["predictions"][k], gen["references"][k])
            self.rows.append((*row, batch["category"][b], gen["generated_ids"][k], gen["target_ids"][k]))


@pytest.mark.slow
def test_generated_accuracy_equals_teacher_forced_accuracy_of_a_trained_model(quiet_trainer):
    """A short run (accuracy between 0 and 1): greedy generation reproduces the answer and its end-of-turn exactly
    when teacher-forced argmax is right on every target, so both accuracies agree sample by sample."""
    L.seed_everything(0)
    module = MultimodalModule(
        model="tiny", optimizer=lambda p: torch.optim.AdamW(p, lr=5e-3, weight_decay=0.0), eval_generate=True
    )
    dm = SyntheticVQADataModule(train_samples=32 * 40, val_samples=64, batch_size=32, question_types=["color"])
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, dm)
    outputs = _Outputs()
    metrics = quiet_trainer(callbacks=[outputs]).validate(module, dm, verbose=False)[0]

    assert len(outputs.rows) == 64
    teacher_forced = [r[0] for r in outputs.rows]
    generated = VQAExactMatch().scores([r[1] for r in outputs.rows], [r[2] for r in outputs.rows]).bool().tolist()
    assert 0 < sum(teacher_forced) < 64, metrics  # neither untrained nor perfect
    assert generated == teacher_forced
    assert metrics["val/gen/exact_match"] == pytest.approx(metrics["val/answer_accuracy"])
    assert metrics["val/gen/exact_match/color"] == pytest.approx(metrics["val/answer_accuracy/color"])
    assert "val/gen/vqa_accuracy" not in metrics  # one reference per sample
    stop = module.stop_token_ids
    for correct, *_, gen_ids, target_ids in outputs.rows:  # right answers are the target tokens up to end-of-turn
        assert (gen_ids == until_stop(target_ids, stop)) == correct
        assert target_ids[-1] in stop


def test_llava_references_give_soft_accuracy_overall_and_per_category(tmp_path, quiet_trainer):
    """Records with ten human answers are also scored with VQAv2 soft accuracy, overall and per category.

    A first pass finds what the (untrained, deterministic) model answers; the references then hold that answer 2, 3
    and 0 times out of 10, so the soft accuracies are 0.6, 0.9 and 0 by hand."""

    records = json.loads((ASSETS / "llava" / "llava_tiny.json").read_text())[:4]
    for k, record in enumerate(records):
        record["category"] = ("a", "b")[k % 2]

    def validate(rows):
        path = tmp_path / "val.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        torch.manual_seed(0)
        module = MultimodalModule(
            model="tiny",
            model_overrides={"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"},
            eval_generate=True,
            max_new_tokens=4,
        )
        dm = LlavaDataModule(train_path=str(path), val_path=str(path), image_folder=str(ASSETS / "llava"), batch_size=4)
        outputs = _Outputs()
        metrics = quiet_trainer(callbacks=[outputs]).validate(module, dm, verbose=False)[0]
        return metrics, outputs.rows

    first, rows = validate(records)
    assert "val/gen/vqa_accuracy" not in first  # one reference each: no soft accuracy
    for record, row, humans in zip(records, rows, (2, 3, 0), strict=False):
        record["answers"] = [row[1]] * humans + [f"other answer {j}" for j in range(10 - humans)]
    metrics, again = validate(records)
    assert [r[1] for r in again] == [r[1] for r in rows]  # greedy: the same answers
    assert [len(r[2]) for r in again] == [10, 10, 10, 1]
    assert metrics["val/gen/vqa_accuracy"] == pytest.approx((0.6 + 0.9 + 0.0) / 3)
    assert metrics["val/gen/vqa_accuracy/a"] == pytest.approx((0.6 + 0.0) / 2)  # records 0 and 2
    assert metrics["val/gen/vqa_accuracy/b"] == pytest.approx(0.9)  # record 3 has a single reference
    assert metrics["val/gen/exact_match/a"] == pytest.approx(0.5)  # record 0's answer is a reference, 2's is not
