"""Stage 2's task: the synthetic scenes with colour-shape combinations held out, a finite training set, eval splits.

The 6 colours x 4 shapes = 24 combinations are split by a Latin square: combination (colour ``c``, shape ``s``) falls
in group ``(c - s) mod 6``; groups 0-3 are trained on (16 combinations), group 4 is the validation-unseen set and group
5 the test-unseen set (4 combinations each). Every shape has exactly one unseen combination in each held-out set, and
every colour is trained with at least two shapes, so an unseen combination is made of a colour and a shape that were
both trained on, never together. Positions are crossed with everything.

Questions ask for the colour, the shape, the position (one word), or ``Describe the image`` (the whole caption, ``a
red square at the top-left``: the answer composes the three attributes). The training set is a finite list of images
(``train_images``) repeated for as many epochs as the step budget needs, so a placement can overfit it; each
evaluation split is a fixed set of new images, the same for every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from lightning_mm.data.synthetic import (
    CAPTION_PROMPT,
    COLORS,
    POSITIONS,
    QUESTIONS,
    SHAPES,
    SyntheticVQADataModule,
    SyntheticVQADataset,
    caption,
)

__all__ = [
    "EVAL_SPLITS",
    "QUESTION_TYPES",
    "SPLIT_GROUPS",
    "HeldOutVQADataModule",
    "HeldOutVQADataset",
    "combination_split",
]

QUESTION_TYPES = ("color", "shape", "position", "describe")
TASK_QUESTIONS: dict[str, tuple[str, ...]] = {**QUESTIONS, "describe": (CAPTION_PROMPT,)}
SPLIT_GROUPS = {"train": (0, 1, 2, 3), "val_unseen": (4,), "test_unseen": (5,)}
# evaluation split -> (combinations it draws from, offset of its image seed from the task's base seed)
EVAL_SPLITS: dict[str, tuple[str, int]] = {
    "val_seen": ("train", 1),
    "val_unseen": ("val_unseen", 2),
    "test_seen": ("train", 3),
    "test_unseen": ("test_unseen", 4),
}


def combination_split(split: str) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) combinations of ``train``, ``val_unseen`` or ``test_unseen`` (Latin square, see above).

    Raises:
        ValueError: for an unknown split name.
    """
    if split not in SPLIT_GROUPS:
        raise ValueError(f"Unknown combination split {split!r}; splits are {sorted(SPLIT_GROUPS)}")
    colors = list(COLORS)
    return tuple(
        (color, shape)
        for c, color in enumerate(colors)
        for s, shape in enumerate(SHAPES)
        if (c - s) % len(colors) in SPLIT_GROUPS[split]
    )


class HeldOutVQADataset(SyntheticVQADataset):
    """Synthetic VQA scenes drawn from a given set of colour-shape combinations, with ``describe`` questions.

    Sample ``i`` depends only on ``(seed, i)``; the category of a sample is its first question's type.

    Args:
        tokenizer: The model's tokenizer.
        num_image_tokens: Tokens one image becomes after the vision tower and projector.
        image_data_config: timm data config of the tower.
        image_token_id: Id of the image placeholder token.
        combinations: The (colour, shape) pairs scenes are drawn from (uniformly).
        num_samples: Dataset length.
        seed: Base seed.
        question_types: Subset of ``color``, ``shape``, ``position``, ``describe``.
        questions_per_image: Question turns per sample, each about a different type.
    """

    def __init__(
        self,
        tokenizer: Any,
        num_image_tokens: int,
        image_data_config: dict[str, Any],
        image_token_id: int,
        combinations: Sequence[tuple[str, str]],
        num_samples: int,
        seed: int,
        question_types: Sequence[str] = QUESTION_TYPES,
        questions_per_image: int = 1,
    ) -> None:
        super().__init__(tokenizer, num_image_tokens, image_data_config, image_token_id, num_samples, seed)
        unknown = set(question_types) - set(TASK_QUESTIONS)
        if unknown:
            raise ValueError(f"Unknown question types {sorted(unknown)}; known: {list(TASK_QUESTIONS)}")
        if not 1 <= questions_per_image <= len(question_types):
            raise ValueError(f"questions_per_image must be in 1..{len(question_types)}, got {questions_per_image}")
        bad = [pair for pair in combinations if pair[0] not in COLORS or pair[1] not in SHAPES]
        if not combinations or bad:
            raise ValueError(f"combinations must be non-empty (colour, shape) pairs of the task; got bad {bad}")
        self.combinations = tuple(tuple(pair) for pair in combinations)
        self.question_types = tuple(question_types)
        self.questions_per_image = questions_per_image

    def scene(self, index: int) -> dict[str, Any]:
        """The attributes of sample ``index``: colour, shape, position, question types and phrasings."""
        rng = np.random.default_rng([self.seed, index])
        order = rng.permutation(len(self.question_types))[: self.questions_per_image]
        qtypes = [self.question_types[int(k)] for k in order]
        color, shape = self.combinations[int(rng.integers(len(self.combinations)))]
        return {
            "color": color,
            "shape": shape,
            "position": POSITIONS[int(rng.integers(len(POSITIONS)))],
            "category": qtypes[0],
            "questions": [(q, TASK_QUESTIONS[q][int(rng.integers(len(TASK_QUESTIONS[q])))]) for q in qtypes],
            "jitter_seed": int(rng.integers(2**31)),
        }

    def turns(self, scene: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """(user text, answer) turns; the first user text holds the image."""
        full = caption(scene["color"], scene["shape"], scene["position"])
        answers = [(q, full if qtype == "describe" else scene[qtype]) for qtype, q in scene["questions"]]
        (first, answer), rest = answers[0], answers[1:]
        return ((f"<image>\n{first}", answer), *rest)


class HeldOutVQADataModule(SyntheticVQADataModule):
    """The held-out-combination task: a finite training set (repeated each epoch) and fixed evaluation splits.

    Args:
        train_images: Number of training images (the finite set; its draw depends on ``draw_seed``).
        val_samples: Questions in each validation split (``val_seen``, ``val_unseen``).
        test_samples: Questions in each test split (``test_seen``, ``test_unseen``).
        batch_size: Micro-batch size.
        seed: Base seed of the evaluation splits (fixed for every run).
        draw_seed: Seed of the training draw (which images and questions make the training set).
        train_questions_per_image: Question turns per training image.
        question_types: Question types asked.
    """

    def __init__(
        self,
        train_images: int = 256,
        val_samples: int = 600,
        test_samples: int = 1200,
        batch_size: int = 32,
        seed: int = 1000,
        draw_seed: int = 0,
        train_questions_per_image: int = 2,
        question_types: Sequence[str] = QUESTION_TYPES,
    ) -> None:
        super().__init__(train_samples=train_images, val_samples=val_samples, batch_size=batch_size, seed=seed)
        self.test_samples = test_samples
        self.draw_seed = draw_seed
        self.task_question_types = tuple(question_types)
        self.train_questions_per_image = train_questions_per_image

    def _split(self, combinations: str, num_samples: int, seed: int, questions: int = 1) -> HeldOutVQADataset:
        return HeldOutVQADataset(
            self.tokenizer,
            self.contract.num_image_tokens,
            self.image_data_config,
            self.image_token_id,
            combination_split(combinations),
            num_samples,
            seed,
            self.task_question_types,
            questions,
        )

    def train_dataloader(self) -> DataLoader:
        seed = 7919 * (self.draw_seed + 1)  # far from the evaluation seeds (base seed + 1..4)
        ds = self._split("train", self.train_samples, seed, self.train_questions_per_image)
        return self._loader(ds, shuffle=True)

    def eval_dataloader(self, split: str) -> DataLoader:
        """The fixed evaluation split ``val_seen``, ``val_unseen``, ``test_seen`` or ``test_unseen``."""
        if split not in EVAL_SPLITS:
            raise ValueError(f"Unknown evaluation split {split!r}; splits are {list(EVAL_SPLITS)}")
        combinations, offset = EVAL_SPLITS[split]
        count = self.val_samples if split.startswith("val") else self.test_samples
        return self._loader(self._split(combinations, count, self.seed + offset), shuffle=False)

    def train_eval_dataloader(self) -> DataLoader:
        """The finite training set itself, in order (to measure how far a run fits it)."""
        return self._loader(self.train_dataloader().dataset, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val_seen")
