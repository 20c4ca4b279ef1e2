"""The evaluation half of :class:`~lightning_mm.MultimodalModule`: validation, test and prediction steps.

Teacher-forced loss and answer accuracy (overall and per category), optionally answers generated greedily and scored
(``eval_generate``), and prediction rows. A mixin of the module: it uses the module's ``network``, ``tokenizer``,
``compute_loss``, ``stop_token_ids`` and settings (``eval_generate``, ``max_new_tokens``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from lightning_mm.data.collate import EMPTY_KEY
from lightning_mm.data.tokenizer import decode_prompt
from lightning_mm.evaluation import GeneratedAnswers, generate_last_answers
from lightning_mm.loss import shift_labels
from lightning_mm.metrics import AnswerMetrics

__all__ = ["EvaluationSteps"]


class EvaluationSteps:
    """``validation_step``, ``test_step`` and ``predict_step``, with their metrics (a LightningModule mixin)."""

    def init_evaluation_metrics(self) -> None:
        """Create the metrics the evaluation steps update (called by the module's ``__init__``)."""
        self.val_loss = MeanMetric()
        self.val_answer_accuracy = MeanMetric()
        self.val_category_accuracy = nn.ModuleDict()
        self.val_generated = AnswerMetrics()  # eval_generate: metrics of the generated answers

    def answer_correct(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample exact match of the answers under teacher forcing.

        Every supervised target predicted by argmax given the true prefix is the same event as greedy decoding
        reproducing the whole answer (with its end-of-turn token), so this equals generation-based exact match for
        single-answer samples at the cost of one projection of the supervised rows.

        Returns:
            (B,) bool; samples without a supervised target count as wrong.
        """
        targets = shift_labels(labels)  # (B, T)
        supervised = targets != -100
        pred, sample = self.network.target_predictions(hidden, labels)  # (N,), (N,)
        wrong = (pred != targets[supervised]).float()
        n_wrong = torch.zeros(labels.shape[0], device=labels.device).index_add_(0, sample, wrong)  # (B,)
        return (n_wrong == 0) & supervised.any(dim=1)

    def generate_answers(self, batch: dict[str, Any], rows: list[int] | None = None) -> GeneratedAnswers:
        """Greedy answers to the last question of each sample of a labelled (right-padded) batch.

        The prompt is everything before the sample's last answer; the fields returned (``predictions``,
        ``references``, ...) are those of :func:`~lightning_mm.evaluation.generate_last_answers`.

        Args:
            batch: A validation batch.
            rows: Answer only these samples (default: all).
        """
        return generate_last_answers(
            self.network, self.tokenizer, batch, self.stop_token_ids, self.max_new_tokens, rows=rows
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Teacher-forced loss and answer accuracy; with ``eval_generate``, generated answers and their metrics.

        Returns:
            ``answer_correct`` ((B,) bool, teacher-forced) and, with ``eval_generate``, ``generated``
            (:class:`~lightning_mm.evaluation.GeneratedAnswers`), for callbacks.
        """
        hidden = self(batch)
        if batch.get(EMPTY_KEY):  # every record of the batch was dropped: nothing to score (the forward kept step)
            return
        labels = batch["labels"]
        loss_sum, n_items = self.compute_loss(hidden, labels)
        if int(n_items) > 0:
            self.val_loss.update(loss_sum / n_items, weight=n_items)
        correct = self.answer_correct(hidden, labels).float()  # (B,)
        self.val_answer_accuracy.update(correct)
        bs = labels.shape[0]
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=bs)
        self.log("val/answer_accuracy", self.val_answer_accuracy, prog_bar=True, batch_size=bs)
        for category in sorted(set(batch.get("category") or [])):
            if category is None:
                continue
            if category not in self.val_category_accuracy:
                self.val_category_accuracy[category] = MeanMetric().to(self.device)
            metric = self.val_category_accuracy[category]
            idx = torch.tensor([c == category for c in batch["category"]], device=correct.device)
            metric.update(correct[idx])
            self.log(
                f"val/answer_accuracy/{category}",
                metric,
                batch_size=int(idx.sum()),
                metric_attribute=f"val_category_accuracy.{category}",
            )
        outputs: dict[str, Any] = {"answer_correct": correct.bool()}
        if self.eval_generate:
            generated = self.generate_answers(batch)
            categories = batch.get("category")
            cats = [categories[b] for b in generated["rows"]] if categories else None
            self.val_generated.update(generated["predictions"], generated["references"], cats)
            outputs["generated"] = generated
        return outputs

    def _log_generated(self) -> None:
        if not self.eval_generate:
            return
        for name, value in self.val_generated.compute().items():  # already over all ranks
            self.log(f"val/gen/{name}", value, prog_bar=name == "exact_match", sync_dist=True)
        self.val_generated.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_generated()

    def on_test_epoch_end(self) -> None:
        self._log_generated()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Greedy answers for left-padded prompts, one row per sample.

        A row holds ``id``, ``prompt`` (the prompt's text, each image span written as ``<image>``), ``prediction``,
        and, when the batch carries them, the reference ``answer`` (and ``answers``, a record's several references),
        ``images`` (paths, or indices for the synthetic task) and ``category``. Generation stops at the template's end-of-turn token as well as at EOS.
        """
        tok = self.tokenizer
        out = self.network.generate(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("pixel_values"),
            max_new_tokens=self.max_new_tokens,
            image_sizes=batch.get("image_sizes"),  # tiling models: (N_img, 2)
            tiles_per_image=batch.get("tiles_per_image"),  # (N_img,)
            eos_token_id=self.stop_token_ids,
            pad_token_id=tok.pad_token_id,
        )
        if batch.get(EMPTY_KEY):  # every record of the batch was dropped: no prompt to answer
            return []
        texts = tok.batch_decode(out, skip_special_tokens=True)
        n = len(texts)
        prompts = [
            decode_prompt(tok, ids[mask.bool()].tolist(), self.image_token_id, self.spec.image_token)
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
        ]
        rows = []
        for b in range(n):
            row = {"id": (batch.get("id") or [None] * n)[b], "prompt": prompts[b], "prediction": texts[b].strip()}
            for key in ("answer", "answers", "images", "category"):
                value = batch[key][b] if batch.get(key) is not None else None
                if value is not None:
                    row[key] = value
            rows.append(row)
        return rows
