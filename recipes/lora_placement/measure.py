"""What a stage-2 run is measured by: answer accuracy per split and question type, the LLM's text-only task, and a
linear probe of the vision tower's features (shape and colour).

All measurements run the model in eval mode without gradients; each is deterministic for given weights, so a
component that stage 2 left untouched gives exactly the score it had before stage 2.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from lightning_mm.data.synthetic import COLORS, SHAPES, SyntheticImageDataset, SyntheticVQADataModule

__all__ = ["answer_accuracy", "probe_accuracy", "ridge_probe", "text_task_accuracy", "tower_features"]


@torch.no_grad()
def answer_accuracy(module: Any, loader: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Teacher-forced exact match of every answer (equal to greedy decoding's), overall and per category.

    Args:
        module: A :class:`~lightning_mm.MultimodalModule` with its network built.
        loader: Collated batches (``input_ids``, ``labels``, ``category``; ``pixel_values`` or ``None``).

    Returns:
        ``{"all": accuracy, "<category>": accuracy, ...}`` as fractions.
    """
    was_training = module.training
    module.eval()
    hits: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for batch in loader:
        hidden = module(batch)  # (B, T, H)
        correct = module.answer_correct(hidden, batch["labels"]).float()  # (B,)
        for category, ok in zip(batch.get("category") or [None] * len(correct), correct.tolist(), strict=True):
            for key in ("all", category):
                if key is not None:
                    hits[key][0] += ok
                    hits[key][1] += 1
    module.train(was_training)
    return {key: right / total for key, (right, total) in hits.items()}


def text_task_accuracy(module: Any, samples: int, seed: int, batch_size: int = 64) -> float:
    """The LLM's text-only task (the scene said in words, then its caption or a question): exact-match accuracy.

    These are new samples of the task the LLM was pretrained on in stage 0 (``mode: text``, no image).
    """
    data = SyntheticVQADataModule(mode="text", val_samples=samples, seed=seed - 1, batch_size=batch_size)
    data.bind(module.data_contract)
    return answer_accuracy(module, data.val_dataloader())["all"]


@torch.no_grad()
def tower_features(module: Any, dataset: SyntheticImageDataset, batch_size: int = 128) -> torch.Tensor:
    """(N, L * D) the tower's output tokens (the layer the projector reads), flattened, for every image."""
    vision = module.network.vision
    was_training = vision.training
    vision.eval()
    feats = [vision(images).flatten(1) for images, _ in DataLoader(dataset, batch_size=batch_size)]  # (B, L * D)
    vision.train(was_training)
    return torch.cat(feats).double()


def ridge_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    ridge: float,
) -> float:
    """Least-squares linear classifier on one-hot targets (closed form, standardised features); test accuracy.

    Args:
        train_x: (N, F) training features.
        train_y: (N,) training labels.
        test_x: (M, F) test features.
        test_y: (M,) test labels.
        num_classes: Number of classes.
        ridge: L2 penalty on the weights (features are standardised first).
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)  # (F,)
    x = torch.cat([(train_x - mean) / std, torch.ones(len(train_x), 1, dtype=train_x.dtype)], dim=1)  # (N, F + 1)
    targets = torch.nn.functional.one_hot(train_y, num_classes).to(x.dtype)  # (N, C)
    gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype)  # (F + 1, F + 1)
    weights = torch.linalg.solve(gram, x.T @ targets)  # (F + 1, C)
    z = torch.cat([(test_x - mean) / std, torch.ones(len(test_x), 1, dtype=test_x.dtype)], dim=1)  # (M, F + 1)
    return float(((z @ weights).argmax(1) == test_y).double().mean())


def probe_accuracy(module: Any, train_images: int, test_images: int, seed: int, ridge: float) -> dict[str, float]:
    """Linear-probe test accuracy of the tower's features for ``shape`` and ``color`` (all combinations).

    Args:
        module: A :class:`~lightning_mm.MultimodalModule` with its network built.
        train_images: Images the probe is fitted on (seed ``seed``).
        test_images: Images it is scored on (seed ``seed + 1``).
        seed: Image seed.
        ridge: L2 penalty of the probe.
    """
    config = module.image_data_config
    data = {}
    for name, count, image_seed in (("train", train_images, seed), ("test", test_images, seed + 1)):
        images = SyntheticImageDataset(config, count, seed=image_seed, target="shape")
        colors = SyntheticImageDataset(config, count, seed=image_seed, target="color")  # the same images
        labels = {
            "shape": torch.tensor([images[i][1] for i in range(count)]),
            "color": torch.tensor([colors[i][1] for i in range(count)]),
        }
        data[name] = (tower_features(module, images), labels)
    (train_x, train_labels), (test_x, test_labels) = data["train"], data["test"]
    return {
        target: ridge_probe(train_x, train_labels[target], test_x, test_labels[target], classes, ridge)
        for target, classes in (("shape", len(SHAPES)), ("color", len(COLORS)))
    }
