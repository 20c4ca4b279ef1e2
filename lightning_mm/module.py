"""MultimodalModule: the LightningModule that trains, validates and runs a VisionLanguageModel."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from lightning_mm.loss import count_supervised, linear_cross_entropy, shift_labels
from lightning_mm.models import VisionLanguageModel
from lightning_mm.optim import split_decay, warmup_schedule
from lightning_mm.zoo import ModelSpec, build_network, count_image_tokens, get_spec, load_tokenizer

__all__ = ["COMPONENTS", "MultimodalModule"]

COMPONENTS = ("vision", "projector", "llm")
OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]


class MultimodalModule(L.LightningModule):
    """Trains a LLaVA-style vision-language model with the shifted, masked causal-LM loss.

    The network is built in ``configure_model`` (lazily and once), so strategies that shard (FSDP) build it where it
    belongs, and placement callbacks declared in ``setup`` are applied before any wrapping. Outside a Trainer, call
    ``configure_model()`` yourself (``create_model`` does).

    Seams for subclasses: :meth:`build_network`, :meth:`forward` (embed + decode), :meth:`compute_loss`,
    :meth:`param_groups`, :meth:`log_train_metrics`.

    Args:
        model: Zoo name of the model (``lightning-mm zoo`` lists them).
        model_overrides: Spec fields to override (``{"projector": "linear", "llm_config": {"num_hidden_layers": 4}}``).
        pretrained: Load pretrained weights (timm hub / transformers ``from_pretrained``); off builds from configs.
        optimizer: Optimiser factory called with the parameter groups (its arguments, e.g. ``lr``, are the defaults of
            every group; placements may set per-component LRs).
        warmup_ratio: Fraction of the optimiser steps spent in linear warm-up.
        schedule: LR schedule after warm-up: ``cosine``, ``linear`` or ``constant``.
        min_lr_ratio: LR floor of the decay, as a fraction of the peak.
        loss_normalization: ``tokens``: the loss of an optimiser step is the sum over supervised targets divided by the
            number of supervised targets in the whole accumulation window on all ranks (token-exact);
            ``mean``: Lightning's default, each micro-batch's mean weighted equally.
        loss_chunk_size: Rows of the output projection computed at once in the loss.
        max_new_tokens: Generation budget of ``predict_step``.
    """

    def __init__(
        self,
        model: str = "tiny",
        model_overrides: dict[str, Any] | None = None,
        pretrained: bool = False,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        warmup_ratio: float = 0.03,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.0,
        loss_normalization: str = "tokens",
        loss_chunk_size: int = 1024,
        max_new_tokens: int = 16,
    ) -> None:
        super().__init__()
        if loss_normalization not in ("tokens", "mean"):
            raise ValueError(f"loss_normalization must be 'tokens' or 'mean', got {loss_normalization!r}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.spec: ModelSpec = get_spec(model).replace(**(model_overrides or {}))
        self.pretrained = pretrained
        self.optimizer_factory = optimizer
        self.warmup_ratio = warmup_ratio
        self.schedule = schedule
        self.min_lr_ratio = min_lr_ratio
        self.loss_normalization = loss_normalization
        self.loss_chunk_size = loss_chunk_size
        self.max_new_tokens = max_new_tokens
        self.network: VisionLanguageModel | None = None
        self.placements: dict[str, Any] = {}  # component -> placement, declared by callbacks
        self._tokenizer = None
        self._image_geometry: tuple[int, dict[str, Any]] | None = None
        self._window_items = 0  # supervised targets seen since the last optimiser step (this rank)
        self.val_loss = MeanMetric()
        self.val_answer_accuracy = MeanMetric()
        self.val_category_accuracy = nn.ModuleDict()

    # ---------------------------------------------------------------- model-owned data facts
    @property
    def tokenizer(self):
        """The LLM's tokenizer (with the image token), loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec)
        return self._tokenizer

    @property
    def num_image_tokens(self) -> int:
        """Tokens each image becomes after the tower and projector (measured on the meta device)."""
        if self._image_geometry is None:
            self._image_geometry = count_image_tokens(self.spec)
        return self._image_geometry[0]

    @property
    def image_data_config(self) -> dict[str, Any]:
        """timm's data config of the vision tower (input size, mean, std, interpolation)."""
        self.num_image_tokens  # noqa: B018 - fills the cache
        return dict(self._image_geometry[1])

    @property
    def image_token_id(self) -> int:
        """Id of the image placeholder token."""
        return int(self.tokenizer.convert_tokens_to_ids(self.spec.image_token))

    # ---------------------------------------------------------------- building
    def build_network(self) -> VisionLanguageModel:
        """Build the plain-torch network (override to change the architecture, e.g. another projector)."""
        return build_network(self.spec, self.tokenizer, pretrained=self.pretrained)

    def configure_model(self) -> None:
        """Build the network once, then apply the declared placements (before any strategy wraps it)."""
        if self.network is not None:
            return
        self.network = self.build_network()
        self.apply_placements()

    def apply_placements(self) -> None:
        """Apply each declared placement to its component (``placement.apply(module, component)``)."""
        for component, placement in self.placements.items():
            placement.apply(self, component)

    def component(self, name: str) -> nn.Module:
        """The ``vision``, ``projector`` or ``llm`` submodule of the network."""
        if name not in COMPONENTS:
            raise ValueError(f"Unknown component {name!r}; components are {COMPONENTS}")
        if self.network is None:
            raise RuntimeError("The network is not built yet: call configure_model() first.")
        return getattr(self.network, name)

    # ---------------------------------------------------------------- forward and loss
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T, H) final hidden states for a collated batch."""
        return self.network(batch["input_ids"], batch.get("attention_mask"), batch.get("pixel_values"))

    def compute_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed shifted cross-entropy over supervised targets, and their count.

        Args:
            hidden: (B, T, H) final hidden states.
            labels: (B, T) labels, -100 where nothing is supervised.

        Returns:
            (loss summed over supervised targets, number of supervised targets), both 0-dim tensors.
        """
        lm_head = self.network.lm_head
        loss_sum = linear_cross_entropy(
            hidden, lm_head.weight, labels, bias=lm_head.bias, num_items=1, chunk_size=self.loss_chunk_size
        )
        return loss_sum, count_supervised(labels)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hidden = self(batch)  # (B, T, H)
        loss_sum, n_items = self.compute_loss(hidden, batch["labels"])
        self._window_items += int(n_items)
        mean = loss_sum.detach() / n_items.clamp(min=1)
        self.log_train_metrics(mean, batch)
        if self.loss_normalization == "mean":
            return loss_sum / n_items.clamp(min=1)
        return loss_sum  # divided by the window's token count in on_before_optimizer_step

    def log_train_metrics(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        """Log the micro-batch's token-mean loss and the supervised-token fraction."""
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        frac = (batch["labels"] != -100).float().mean()
        self.log("train/supervised_fraction", frac, batch_size=batch["input_ids"].shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Token-exact normalisation: scale the summed-loss gradients by 1 / (targets in the window, all ranks).

        Lightning divides each micro-batch loss by ``accumulate_grad_batches`` and data-parallel strategies average
        gradients over ranks; both factors are undone here so the step's gradient is that of the window's token mean.
        """
        if self.loss_normalization != "tokens":
            return
        local = torch.tensor(float(self._window_items), device=self.device)
        total = self.trainer.strategy.reduce(local, reduce_op="sum") if self.trainer.world_size > 1 else local
        self._window_items = 0
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / max(float(total), 1.0)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.mul_(scale)

    # ---------------------------------------------------------------- evaluation
    def answer_correct(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample exact match of the answers under teacher forcing.

        Every supervised target predicted by argmax given the true prefix is the same event as greedy decoding
        reproducing the whole answer (with its end-of-turn token), so this equals generation-based exact match for
        single-answer samples at the cost of one projection of the supervised rows.

        Returns:
            (B,) bool; samples without a supervised target count as wrong.
        """
        targets = shift_labels(labels)  # (B, T)
        rows = (targets != -100).nonzero(as_tuple=True)  # ((N,), (N,))
        lm_head = self.network.lm_head
        pred = lm_head(hidden[rows]).argmax(dim=-1)  # (N,)
        wrong = (pred != targets[rows]).float()
        n_wrong = torch.zeros(labels.shape[0], device=labels.device).index_add_(0, rows[0], wrong)  # (B,)
        has_target = (targets != -100).any(dim=1)
        return (n_wrong == 0) & has_target

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hidden = self(batch)
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

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Greedy answers for left-padded prompts: a list of ``{"id", "prediction", "answer"}``."""
        tok = self.tokenizer
        out = self.network.generate(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("pixel_values"),
            max_new_tokens=self.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        texts = tok.batch_decode(out, skip_special_tokens=True)
        ids = batch.get("id") or [None] * len(texts)
        answers = batch.get("answer") or [None] * len(texts)
        return [{"id": i, "prediction": t.strip(), "answer": a} for i, t, a in zip(ids, texts, answers, strict=True)]

    # ---------------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: per component, with and without weight decay; a placement's ``lr`` overrides."""
        groups = []
        for name in COMPONENTS:
            decay, no_decay = split_decay(self.component(name).named_parameters())
            extra = {}
            lr = getattr(self.placements.get(name), "lr", None)
            if lr is not None:
                extra["lr"] = lr
            if decay:
                groups.append({"params": decay, "name": f"{name}", **extra})
            if no_decay:
                groups.append({"params": no_decay, "name": f"{name}/no_decay", "weight_decay": 0.0, **extra})
        if not groups:
            raise RuntimeError("No trainable parameters: every component is frozen.")
        return groups

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.param_groups())
        total = self.trainer.estimated_stepping_batches
        fn = warmup_schedule(total, self.warmup_ratio, self.schedule, self.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
