"""The built-in task's world: scenes of one shape of one colour in one quadrant, their words, captions and tokenizer.

Each image shows one shape of one colour in one quadrant, with jittered size and offset over a noisy background.
:class:`SyntheticImageDataset` labels the images with one attribute, to pretrain a vision tower as a classifier; the
question answering and captioning samples are :class:`~lightning_mm.data.SyntheticVQADataset`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.tokenizer import build_word_tokenizer

__all__ = [
    "ANSWERS",
    "ATTRIBUTES",
    "CAPTION_PROMPT",
    "CAPTION_WORDS",
    "COLORS",
    "POSITIONS",
    "QUESTIONS",
    "SHAPES",
    "SceneCanvas",
    "SyntheticImageDataset",
    "build_synthetic_tokenizer",
    "caption",
    "draw_attributes",
    "render_scene",
]

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 0.9, 0.1),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (1.0, 0.95, 0.1),
    "magenta": (1.0, 0.1, 1.0),
    "cyan": (0.1, 0.95, 0.95),
}
SHAPES = ("square", "circle", "triangle", "cross")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": ("What color is the shape?", "Which color does the shape have?"),
    "shape": ("What shape is shown?", "Which shape is in the image?"),
    "position": ("Where is the shape?", "In which corner is the shape?"),
}
ANSWERS: dict[str, Sequence[str]] = {"color": tuple(COLORS), "shape": SHAPES, "position": POSITIONS}
CAPTION_WORDS = ("a", "at", "the", "image", "shows", "Describe")
CAPTION_PROMPT = "Describe the image"
ATTRIBUTES = ("color", "shape", "position")


def build_synthetic_tokenizer(special_ids: Mapping[str, int] | None = None) -> PreTrainedTokenizerBase:
    """The built-in task's tokenizer: every question, answer and caption word, ChatML special tokens, and a model's
    ``special_ids`` at their ids (:func:`~lightning_mm.data.tokenizer.build_word_tokenizer`)."""
    words = [w for qs in QUESTIONS.values() for q in qs for w in q.split()]
    words += [a for answers in ANSWERS.values() for a in answers] + list(CAPTION_WORDS)
    return build_word_tokenizer(words, special_ids=special_ids)


def caption(color: str, shape: str, position: str, attributes: Sequence[str] = ATTRIBUTES) -> str:
    """The caption of a scene: ``a red square at the top-left`` (every word is a token of the task's tokenizer).

    Args:
        color: The colour.
        shape: The shape.
        position: The quadrant.
        attributes: Which attributes the caption mentions: ``a red shape`` without the shape, no ``at the ...``
            without the position.
    """
    unknown = set(attributes) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"Unknown caption attributes {sorted(unknown)}; known: {ATTRIBUTES}")
    words = ["a", *([color] if "color" in attributes else []), shape if "shape" in attributes else "shape"]
    if "position" in attributes:
        words += ["at", "the", position]
    return " ".join(words)


def render_scene(size: int, color: str, shape: str, position: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one scene.

    Args:
        size: Image side in pixels.
        color: Key of :data:`COLORS`.
        shape: One of :data:`SHAPES`.
        position: One of :data:`POSITIONS` (the quadrant).
        rng: Source of jitter and noise.

    Returns:
        (3, size, size) float32 image in [0, 1].
    """
    half = size / 2
    r = half * rng.uniform(0.36, 0.44)  # shape radius
    row, col = position.split("-")
    cy = (0 if row == "top" else half) + half / 2 + rng.uniform(-0.12, 0.12) * half
    cx = (0 if col == "left" else half) + half / 2 + rng.uniform(-0.12, 0.12) * half
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # (S, S)
    dy, dx = y - cy, x - cx
    if shape == "square":
        mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif shape == "circle":
        mask = dx**2 + dy**2 <= r**2
    elif shape == "triangle":  # apex up
        mask = (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    else:  # cross
        t = r / 3
        mask = ((np.abs(dx) <= t) & (np.abs(dy) <= r)) | ((np.abs(dy) <= t) & (np.abs(dx) <= r))
    img = rng.uniform(0.0, 0.15, size=(3, size, size)).astype(np.float32)  # noisy dark background
    rgb = np.asarray(COLORS[color], dtype=np.float32)[:, None, None] * rng.uniform(0.8, 1.0)
    return np.where(mask[None], rgb, img)


def draw_attributes(rng: np.random.Generator) -> dict[str, str]:
    """A scene's colour, shape and position, drawn uniformly (in that order) from ``rng``."""
    return {
        "color": list(COLORS)[int(rng.integers(len(COLORS)))],
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "position": POSITIONS[int(rng.integers(len(POSITIONS)))],
    }


class SceneCanvas:
    """The square input of the vision tower that scenes are drawn for, and its normalisation.

    Args:
        image_data_config: timm data config of the tower (``input_size``, ``mean``, ``std``).
    """

    def __init__(self, image_data_config: dict[str, Any]) -> None:
        _, h, w = image_data_config["input_size"]
        if h != w:
            raise ValueError(f"the synthetic task draws square images; the tower expects {h}x{w}")
        self.size = h
        self.mean = torch.tensor(image_data_config["mean"], dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        self.std = torch.tensor(image_data_config["std"], dtype=torch.float32)[:, None, None]  # (3, 1, 1)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """(3, S, S) image in [0, 1] -> normalised with the tower's mean and std."""
        return (image - self.mean) / self.std

    def draw(self, attributes: dict[str, str], rng: np.random.Generator) -> torch.Tensor:
        """(3, S, S) float32 image in [0, 1] of a scene (see :func:`render_scene`)."""
        return torch.from_numpy(
            render_scene(self.size, attributes["color"], attributes["shape"], attributes["position"], rng)
        )


class SyntheticImageDataset(Dataset):
    """The task's scenes as image classification: each image labelled with one attribute (e.g. shape only).

    Scenes are drawn as in :class:`SyntheticVQADataset` (uniform colour, shape and position; jittered size and offset;
    noisy background); sample ``i`` depends only on ``(seed, i)``.

    Args:
        image_data_config: timm data config of the tower (``input_size``, ``mean``, ``std``).
        num_samples: Dataset length.
        seed: Base seed.
        target: The labelled attribute: ``color``, ``shape`` or ``position``; labels index :attr:`classes`.
    """

    def __init__(
        self, image_data_config: dict[str, Any], num_samples: int = 10000, seed: int = 0, target: str = "shape"
    ) -> None:
        if target not in ANSWERS:
            raise ValueError(f"Unknown target {target!r}; targets are {sorted(ANSWERS)}")
        self.canvas = SceneCanvas(image_data_config)
        self.num_samples = num_samples
        self.seed = seed
        self.target = target

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in label order."""
        return tuple(ANSWERS[self.target])

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(pixel_values (3, S, S) normalised, label)``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        scene = draw_attributes(rng)
        return self.canvas.normalise(self.canvas.draw(scene, rng)), self.classes.index(scene[self.target])
