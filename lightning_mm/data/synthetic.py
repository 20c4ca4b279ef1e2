"""The built-in task: synthetic visual question answering, generated on the fly, deterministic by seed.

Each image shows one shape of one colour in one quadrant (see :mod:`lightning_mm.data.scenes`). Questions ask for the colour, the shape or the position; answers are one word. With ``blind_images=True`` every image
is blank (the image-blind control: a model can then only guess from the question).

Besides question answering (``mode="vqa"``), the same scenes serve the other stages of a LLaVA-style pipeline:

* ``mode="caption"``: the image and its caption (``a red square at the top-left``), for projector alignment with the
  ``plain`` template;
* ``mode="text"``: no image at all; the user states the scene in words where the image would be (``the image shows a
  red square at the top-left``), and the assistant describes it or answers questions about it, so a language model
  learns the task's words and to answer from what it was told;
* :class:`SyntheticImageDataset`: images labelled with one attribute, to pretrain a vision tower as a classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lightning_mm.data.chat_template import get_template
from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.data.layout import FixedLayout, ImageLayout, resolve_layout
from lightning_mm.data.scenes import (
    ATTRIBUTES,
    CAPTION_PROMPT,
    COLORS,
    POSITIONS,
    QUESTIONS,
    SHAPES,
    SceneCanvas,
    SyntheticImageDataset,
    build_synthetic_tokenizer,
    caption,
    draw_attributes,
    render_scene,
)
from lightning_mm.data.segments import count_placeholders, encode_conversation

__all__ = [
    "COLORS",
    "POSITIONS",
    "QUESTIONS",
    "MODES",
    "SHAPES",
    "SyntheticImageDataset",
    "SyntheticVQADataModule",
    "SyntheticVQADataset",
    "build_synthetic_tokenizer",
    "caption",
    "render_scene",
]

MODES = ("vqa", "caption", "text")


class SyntheticVQADataset(Dataset):
    """Synthetic VQA samples; sample ``i`` depends only on ``(seed, i)``.

    Args:
        tokenizer: The model's tokenizer (see :func:`build_synthetic_tokenizer`).
        num_image_tokens: Tokens one image becomes after the vision tower and projector.
        image_data_config: timm data config of the tower (``input_size``, ``mean``, ``std``).
        image_token_id: Id of the image placeholder token.
        num_samples: Dataset length.
        seed: Base seed; train and validation use different seeds.
        blind_images: Replace every image by a blank one (image-blind control).
        question_types: Subset of ``color``, ``shape``, ``position``.
        template: Chat template name.
        generation: Render prompts only (for ``predict``): no answer tokens, the answer kept as text, the sample's
            index as its image reference (``images``).
        questions_per_image: Question turns per sample, each about a different attribute, in random order (more
            supervision per image); with more than one, ``category`` is the first question's type.
        mode: ``vqa``: the image, then questions and one-word answers. ``caption``: the image and its caption (one
            turn, category ``caption``; the ``plain`` template keeps only the image and the caption). ``text``: no
            image; the first user turn states the scene in words instead (``the image shows <caption>``), then the
            assistant gives the caption (even indices: the first question is ``Describe the image``) and answers the
            questions.
        caption_attributes: What the captions of ``caption`` mode mention (default all three: ``a red square at the
            top-left``; e.g. ``[color, shape]``: ``a red square``, leaving the position to be learnt later).
    """

    def __init__(
        self,
        tokenizer,
        num_image_tokens: int,
        image_data_config: dict[str, Any],
        image_token_id: int,
        num_samples: int = 10000,
        seed: int = 0,
        blind_images: bool = False,
        question_types: Sequence[str] = ("color", "shape", "position"),
        template: str = "chatml",
        generation: bool = False,
        questions_per_image: int = 1,
        mode: str = "vqa",
        caption_attributes: Sequence[str] = ATTRIBUTES,
        layout: ImageLayout | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; modes are {MODES}")
        if not 1 <= questions_per_image <= len(question_types):
            raise ValueError(f"questions_per_image must be in 1..{len(question_types)}, got {questions_per_image}")
        unknown = set(question_types) - set(QUESTIONS)
        if unknown:
            raise ValueError(f"Unknown question types {sorted(unknown)}; known: {sorted(QUESTIONS)}")
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.image_token_id = image_token_id
        self.canvas = SceneCanvas(image_data_config)
        self.layout = resolve_layout(layout, num_image_tokens, image_token_id)
        size = (self.canvas.size, self.canvas.size)
        self.image_prompt = self.layout.prompt_ids(size)
        self.num_samples = num_samples
        self.seed = seed
        self.blind_images = blind_images
        self.question_types = tuple(question_types)
        self.template = get_template(template)
        self.generation = generation
        self.questions_per_image = questions_per_image
        self.mode = mode
        self.caption_attributes = tuple(caption_attributes)
        caption("red", "square", "top-left", self.caption_attributes)  # raises on an unknown attribute

    def __len__(self) -> int:
        return self.num_samples

    def scene(self, index: int) -> dict[str, Any]:
        """The attributes of sample ``index`` (colour, shape, position, question type and phrasing)."""
        rng = np.random.default_rng([self.seed, index])
        order = rng.permutation(len(self.question_types))[: self.questions_per_image]
        qtypes = [self.question_types[int(k)] for k in order]
        return {
            **draw_attributes(rng),
            "category": qtypes[0],
            "questions": [(q, QUESTIONS[q][int(rng.integers(len(QUESTIONS[q])))]) for q in qtypes],
            "jitter_seed": int(rng.integers(2**31)),
            "describe": index % 2 == 0,  # text mode: ask for the caption first
        }

    def turns(self, scene: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """The (user text, answer) turns of a scene in this mode (in the image modes the first text holds the image)."""
        text = caption(scene["color"], scene["shape"], scene["position"])
        questions = tuple((question, scene[qtype]) for qtype, question in scene["questions"])
        if self.mode == "caption":
            short = caption(scene["color"], scene["shape"], scene["position"], self.caption_attributes)
            return ((f"<image>\n{CAPTION_PROMPT}", short),)
        lead = "<image>"
        if self.mode == "text":
            lead = f"the image shows {text}"
            if scene["describe"]:
                questions = ((CAPTION_PROMPT, text), *questions)
        (first, answer), rest = questions[0], questions[1:]
        return ((f"{lead}\n{first}", answer), *rest)

    @lru_cache(maxsize=16384)  # noqa: B019 - conversations repeat; the dataset lives as long as its cache
    def _encode(self, turns: tuple[tuple[str, str], ...]) -> tuple[torch.Tensor, torch.Tensor]:
        messages = []
        for user, answer in turns:
            messages.append({"role": "user", "content": user})
            if not self.generation:
                messages.append({"role": "assistant", "content": answer})
        segs = self.template.render(messages, add_generation_prompt=self.generation, tokenizer=self.tokenizer)
        n_images = count_placeholders(segs)
        ids, labels, _ = encode_conversation(segs, self.tokenizer, [self.image_prompt] * n_images)
        return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        s = self.scene(index)
        turns = self.turns(s)
        input_ids, labels = self._encode(turns)
        sample = {
            "id": f"synthetic-{self.seed}-{index}",
            "input_ids": input_ids,
            "labels": labels,
            "category": "caption" if self.mode == "caption" else s["category"],
            "answer": " ".join(a for _, a in turns),
        }
        if self.mode == "text":
            return sample  # no image: the collator counts 0 images for this sample
        if self.generation:
            sample["images"] = [index]  # the scene is sample ``index`` of this dataset (seed and index draw it)
        if self.blind_images:
            img = torch.zeros(3, self.canvas.size, self.canvas.size)
        else:
            img = self.canvas.draw(s, np.random.default_rng(s["jitter_seed"]))  # (3, S, S)
        if isinstance(self.layout, FixedLayout):  # drawn at the tower's input size: no resizing
            sample["pixel_values"] = self.canvas.normalise(img).unsqueeze(0)  # (1, 3, S, S)
            return sample
        image = Image.fromarray((img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())  # (S, S, 3) RGB
        prepared = self.layout.prepare(image)
        sample["pixel_values"] = prepared.tiles  # (n_tiles, 3, H, W)
        sample["image_sizes"] = torch.tensor([prepared.size], dtype=torch.long)  # (1, 2)
        sample["tiles_per_image"] = torch.tensor([len(prepared.tiles)], dtype=torch.long)  # (1,)
        return sample


class SyntheticVQADataModule(VLMDataModule):
    """The built-in synthetic VQA task (no download).

    Args:
        train_samples: Number of training samples per epoch.
        val_samples: Number of held-out samples (a different seed from training).
        batch_size: Per-device micro-batch size.
        num_workers: DataLoader worker processes.
        seed: Base seed of the samples and of the training order (validation uses ``seed + 1``, prediction
            ``seed + 2``).
        blind_images: Blank every image (image-blind control).
        question_types: Which question types to ask: ``color``, ``shape``, ``position``.
        template: Chat template name (None: the model's).
        predict_samples: Number of samples rendered for ``lightning-mm predict``.
        train_questions_per_image: Question turns per training sample (validation always asks one question).
        mode: ``vqa`` (questions about the image), ``caption`` (image and caption, for alignment; use it with the
            ``plain`` template) or ``text`` (no image: the scene in words, then questions, to pretrain the language model).
        caption_attributes: What ``caption`` mode captions mention (default: colour, shape and position).
        packing: Train on padding-free rows of this many tokens, several samples each, attention confined to each
            sample (:mod:`lightning_mm.data.packing`; ``batch_size`` then counts rows); None: one sample per row.
    """

    def __init__(
        self,
        train_samples: int = 20000,
        val_samples: int = 600,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        blind_images: bool = False,
        question_types: list[str] | None = None,
        template: str | None = None,
        predict_samples: int = 32,
        train_questions_per_image: int = 1,
        mode: str = "vqa",
        caption_attributes: list[str] | None = None,
        packing: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; modes are {MODES}")
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.train_samples = train_samples
        self.val_samples = val_samples
        self.blind_images = blind_images
        self.question_types = tuple(question_types or QUESTIONS)
        self.template = template
        self.predict_samples = predict_samples
        self.train_questions_per_image = train_questions_per_image
        self.mode = mode
        self.caption_attributes = tuple(caption_attributes or ATTRIBUTES)
        self.packing = packing

    def _dataset(
        self, num_samples: int, seed: int, generation: bool = False, questions_per_image: int = 1
    ) -> SyntheticVQADataset:
        return SyntheticVQADataset(
            self.tokenizer,
            self.contract.num_image_tokens,
            self.image_data_config,
            self.image_token_id,
            num_samples=num_samples,
            seed=seed,
            blind_images=self.blind_images,
            question_types=self.question_types,
            template=self.template or self.contract.template.name,
            generation=generation,
            questions_per_image=questions_per_image,
            mode=self.mode,
            caption_attributes=self.caption_attributes,
            layout=self.layout,
        )

    def train_dataloader(self) -> DataLoader:
        ds = self._dataset(self.train_samples, self.seed, questions_per_image=self.train_questions_per_image)
        if self.packing:
            return self._packed_loader(ds, self.packing)
        return self._loader(ds, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(self.val_samples, self.seed + 1), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        ds = self._dataset(self.predict_samples, self.seed + 2, generation=True)
        return self._loader(ds, shuffle=False, padding_side="left")
