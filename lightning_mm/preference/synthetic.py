"""The built-in preference task: synthetic VQA pairs, chosen = the right answer, rejected = a wrong one.

Built offline from :class:`~lightning_mm.data.SyntheticVQADataset`: the same scenes, images and questions; the
rejected answer is another word of the asked attribute (another colour, shape or position), drawn from the sample's
seed, so the pairs are deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lightning_mm.data.scenes import COLORS, POSITIONS, SHAPES
from lightning_mm.data.segments import count_placeholders, encode_conversation
from lightning_mm.data.synthetic import SyntheticVQADataModule, SyntheticVQADataset
from lightning_mm.preference.data import PreferenceCollator, make_pair

__all__ = ["SyntheticPreferenceDataModule", "SyntheticPreferenceDataset"]

_CHOICES = {"color": COLORS, "shape": SHAPES, "position": POSITIONS}


class SyntheticPreferenceDataset(Dataset):
    """Pairs over a synthetic VQA dataset: its question and image, its answer chosen, a wrong answer rejected.

    Args:
        questions: The VQA dataset (``mode="vqa"``, one question per image, not in generation mode).
    """

    def __init__(self, questions: SyntheticVQADataset) -> None:
        if questions.mode != "vqa" or questions.generation or questions.questions_per_image != 1:
            raise ValueError("SyntheticPreferenceDataset needs a vqa-mode dataset with one question per image")
        self.questions = questions

    def __len__(self) -> int:
        return len(self.questions)

    def _encode(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        q = self.questions
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        segs = q.template.render(messages)
        enc = encode_conversation(segs, q.tokenizer, [q.image_prompt] * count_placeholders(segs))
        return enc.input_ids, enc.labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        q = self.questions
        sample = q[index]  # images drawn once, the right answer
        scene = q.scene(index)
        ((question, right),) = q.turns(scene)
        qtype = scene["questions"][0][0]
        rng = np.random.default_rng([q.seed, index, 1])
        wrong = [w for w in _CHOICES[qtype] if w != right]
        rejected = wrong[int(rng.integers(len(wrong)))]
        images = {k: sample.get(k) for k in ("pixel_values", "image_sizes", "tiles_per_image")}
        pair = make_pair(
            sample["id"],
            (sample["input_ids"].tolist(), sample["labels"].tolist()),
            self._encode(question, rejected),
            images=images,
        )
        pair.update(category=sample["category"], chosen=right, rejected=rejected)
        return pair


class SyntheticPreferenceDataModule(SyntheticVQADataModule):
    """The synthetic VQA task as preference pairs (no download): train and held-out pairs, one question each.

    Prediction renders the plain VQA prompts (greedy answers, as :class:`~lightning_mm.data.SyntheticVQADataModule`).

    Args:
        train_samples: Training pairs per epoch.
        val_samples: Held-out pairs (another seed).
        batch_size: Pairs per micro-batch (each pair is two rows).
        num_workers: DataLoader worker processes.
        seed: Base seed (validation ``seed + 1``, prediction ``seed + 2``).
        question_types: Which questions: ``color``, ``shape``, ``position``.
        template: Chat template name (None: the model's).
        predict_samples: Prompts rendered for ``lightning-mm predict``.
    """

    def __init__(
        self,
        train_samples: int = 4000,
        val_samples: int = 200,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        question_types: list[str] | None = None,
        template: str | None = None,
        predict_samples: int = 32,
    ) -> None:
        super().__init__(
            train_samples=train_samples,
            val_samples=val_samples,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            question_types=question_types,
            template=template,
            predict_samples=predict_samples,
        )

    def _dataset(self, num_samples: int, seed: int, generation: bool = False, questions_per_image: int = 1) -> Dataset:
        questions = super()._dataset(num_samples, seed, generation=generation, questions_per_image=1)
        return questions if generation else SyntheticPreferenceDataset(questions)

    def collator(self, padding_side: str = "right"):
        """Pairs (:class:`~lightning_mm.preference.PreferenceCollator`) for training and validation; left-padded
        single prompts for prediction."""
        base = super().collator(padding_side)
        return base if padding_side == "left" else PreferenceCollator(base)
