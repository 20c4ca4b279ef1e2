"""MultimodalModule: the LightningModule that trains, validates and runs a VisionLanguageModel."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from lightning_mm.checkpoint_file import check_checkpoint_file
from lightning_mm.checkpoint_io import use_atomic_checkpoint_io
from lightning_mm.data.collate import EMPTY_KEY
from lightning_mm.data.tokenizer import decode_prompt
from lightning_mm.distributed.fsdp2 import unsharded
from lightning_mm.evaluation import GeneratedAnswers, generate_last_answers
from lightning_mm.loss import count_supervised, linear_cross_entropy, shift_labels
from lightning_mm.metrics import AnswerMetrics
from lightning_mm.models import VisionLanguageModel
from lightning_mm.optim import build_scheduler, split_decay
from lightning_mm.zoo import ModelSpec, build_network, count_image_tokens, get_spec, load_tokenizer
from lightning_mm.zoo.checks import check_spec
from lightning_mm.zoo.hf import absolute_hf_name

if TYPE_CHECKING:
    from lightning_mm.callbacks.placement import Placement

__all__ = ["COMPONENTS", "MultimodalModule", "holds_every_weight"]

COMPONENTS = ("vision", "projector", "llm")
OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]
# set while load_from_checkpoint builds from a checkpoint that holds every weight: pretrained sources are not read
_BUILDING_FROM_FULL_CHECKPOINT: ContextVar[bool] = ContextVar("lightning_mm_full_checkpoint", default=False)


def holds_every_weight(checkpoint_path: Any) -> bool:
    """Whether ``checkpoint_path`` is a lightning_mm checkpoint file with the whole state dict (not adapter-only).

    Reads the file memory-mapped (tensors are not loaded); anything that is not such a readable file gives False.
    """
    from lightning_mm.callbacks.checkpointing import CHECKPOINT_KEY

    if not isinstance(checkpoint_path, (str, os.PathLike)) or not os.path.isfile(checkpoint_path):
        return False
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001 - not ours to judge: the real load reports what is wrong with the file
        return False
    state = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return isinstance(state, dict) and "state_dict" in checkpoint and not state.get("adapter_only")


class MultimodalModule(L.LightningModule):
    """Trains a LLaVA-style vision-language model with the shifted, masked causal-LM loss.

    The network is built in ``configure_model`` (lazily and once), so strategies that shard (FSDP) build it where it
    belongs, and placement callbacks declared in ``setup`` are applied before any wrapping; under
    ``ModelParallelStrategy`` it is sharded there with FSDP2 (:mod:`lightning_mm.distributed`). Outside a Trainer, call
    ``configure_model()`` yourself (``create_model`` does).

    Placements (frozen / full / LoRA per component, :mod:`lightning_mm.callbacks`) are stored in every checkpoint, so
    ``load_from_checkpoint`` and ``fit(ckpt_path=...)`` rebuild the adapters before the weights load. Without a
    placement every component trains, except a vision tower's blocks after its feature layer (they never run).

    Seams for subclasses: :meth:`build_network`, :meth:`forward` (embed + decode), :meth:`compute_loss`,
    :meth:`param_groups`, :meth:`log_train_metrics`, :meth:`generate_answers` (generation-based evaluation).

    Args:
        model: Zoo name of the model (``lightning-mm zoo`` lists them), or ``hf:<hub id or directory>`` for a
            transformers LLaVA checkpoint (``pretrained: true`` loads its weights).
        model_overrides: Spec fields to override (``{"projector": "linear", "llm_config": {"num_hidden_layers": 4}}``).
            The zoo name, the fields and the template, projector and vision tower they name are checked here, at
            construction (a :class:`~lightning_mm.errors.ConfigError` naming the key, with close names).
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
        max_new_tokens: Generation budget of ``predict_step`` and of ``eval_generate``.
        activation_checkpointing: Recompute the activations of the vision blocks and LLM decoder layers in backward
            (non-reentrant, so LoRA inside a frozen component still gets gradients).
        eval_generate: In validate/test, also answer each sample's last question by greedy generation (batched,
            left-padded, KV cache, stopping at the template's end-of-turn) and score the answers against the
            references: ``val/gen/exact_match`` (VQA answer normalisation), ``val/gen/vqa_accuracy`` (VQAv2 soft
            accuracy, samples with several references in an ``answers`` field), ``val/gen/anls``, and each
            ``.../<category>`` (:class:`~lightning_mm.metrics.AnswerMetrics`).
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
        activation_checkpointing: bool = False,
        eval_generate: bool = False,
    ) -> None:
        super().__init__()
        if loss_normalization not in ("tokens", "mean"):
            raise ValueError(f"loss_normalization must be 'tokens' or 'mean', got {loss_normalization!r}")
        self.save_hyperparameters(ignore=["optimizer"])
        # recorded in checkpoints (also when the CLI gives the hyperparameters): not relative to the working directory
        self.hparams["model"] = model = absolute_hf_name(model)
        self.spec: ModelSpec = get_spec(model).replace(**(model_overrides or {}))
        check_spec(self.spec, model_overrides)  # unknown template / projector / tower: an error now, not at predict
        self.pretrained = pretrained
        self.optimizer_factory = optimizer
        self.warmup_ratio = warmup_ratio
        self.schedule = schedule
        self.min_lr_ratio = min_lr_ratio
        self.loss_normalization = loss_normalization
        self.loss_chunk_size = loss_chunk_size
        self.max_new_tokens = max_new_tokens
        self.activation_checkpointing = activation_checkpointing
        self.eval_generate = eval_generate
        self.network: VisionLanguageModel | None = None
        self.placements: dict[str, Placement] = {}  # component -> placement, declared by callbacks
        self.adapter_only_checkpoints = False  # set by AdapterOnlyCheckpoint: checkpoints hold no frozen weights
        self.base_mismatch: list[str] = []  # components whose base differed from an adapter-only checkpoint's
        self._tokenizer = None
        self._image_geometry: tuple[int, dict[str, Any]] | None = None
        self._window_items = 0  # supervised targets seen since the last optimiser step (this rank)
        self._unwrapped: dict[str, Any] | None = None  # FSDP1: parameter ndims and placement rows before wrapping
        self.val_loss = MeanMetric()
        self.val_answer_accuracy = MeanMetric()
        self.val_category_accuracy = nn.ModuleDict()
        self.val_generated = AnswerMetrics()  # eval_generate: metrics of the generated answers

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
        if self.spec.image_token_id is not None:
            return self.spec.image_token_id
        return int(self.tokenizer.convert_tokens_to_ids(self.spec.image_token))

    # ---------------------------------------------------------------- building
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike | IO,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> MultimodalModule:
        """Lightning's ``load_from_checkpoint``; a checkpoint that holds every weight needs no pretrained source.

        When the checkpoint is a whole one (not adapter-only), the network is built from its configs and the
        checkpoint's weights are loaded into it: the pretrained weights the model was started from (hub or local
        files) are not read, so a whole checkpoint loads offline and without downloading them again. ``pretrained``
        keeps its value for what follows (adapter-only checkpoints written later still record it). Adapter-only
        checkpoints build the pretrained base as before. A missing, empty or truncated file is a short
        :class:`~lightning_mm.checkpoint_file.CheckpointFileError` naming it.
        """
        check_checkpoint_file(checkpoint_path)
        token = _BUILDING_FROM_FULL_CHECKPOINT.set(holds_every_weight(checkpoint_path))
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs
            )
        finally:
            _BUILDING_FROM_FULL_CHECKPOINT.reset(token)

    def build_network(self) -> VisionLanguageModel:
        """Build the plain-torch network (override to change the architecture, e.g. another projector).

        Pretrained weights are loaded when ``pretrained`` is set, except while ``load_from_checkpoint`` builds from a
        checkpoint that holds every weight.
        """
        tokenizer = self.tokenizer if self.spec.needs_tokenizer else self._tokenizer  # a complete spec builds offline
        pretrained = self.pretrained and not _BUILDING_FROM_FULL_CHECKPOINT.get()
        return build_network(self.spec, tokenizer, pretrained=pretrained)

    def configure_model(self) -> None:
        """Build the network once, apply the declared placements and activation checkpointing, then shard it.

        Under a Trainer the strategy is checked first (:func:`~lightning_mm.distributed.check_strategy`: clear errors
        for settings that cannot work); with a device mesh (``ModelParallelStrategy``) the network is sharded with
        FSDP2, unit by unit (:func:`~lightning_mm.distributed.fully_shard_network`). FSDP1 wraps after this hook.
        """
        if self.network is None:
            self.network = self.build_network()
            self.apply_placements()
            if self.activation_checkpointing:
                self.network.enable_activation_checkpointing()
        if self._trainer is not None:
            self._prepare_for_strategy()

    def _prepare_for_strategy(self) -> None:
        from lightning_mm import distributed

        distributed.check_strategy(self, self.trainer)
        if distributed.flattens_parameters(self.trainer.strategy) and self._unwrapped is None:
            # FSDP1 turns the parameters into 1-D shards: keep what weight decay and the placement table need
            ndims = {c: distributed.parameter_ndims(self.component(c)) for c in COMPONENTS}
            self._unwrapped = {"ndims": ndims, "rows": self.placement_table()}
        distributed.shard_for_strategy(self)

    def set_placement(self, component: str, placement: Placement) -> None:
        """Declare how ``component`` trains; applied at once if the network exists, else by ``configure_model``.

        Args:
            component: ``vision``, ``projector`` or ``llm``.
            placement: A :class:`~lightning_mm.callbacks.Placement` (frozen / full / LoRA, optional ``lr``).
        """
        if component not in COMPONENTS:
            raise ValueError(f"Unknown component {component!r}; components are {COMPONENTS}")
        previous = self.placements.get(component)
        self.placements[component] = placement
        if self.network is None:
            return
        try:
            self.apply_placements()
        except Exception:
            if previous is None:
                del self.placements[component]
            else:
                self.placements[component] = previous
            raise

    def apply_placements(self) -> None:
        """Apply each declared placement to its component (``placement.apply(module, component)``), idempotently.

        Parameters that never take part in ``forward`` (a vision tower's blocks after its feature layer) are frozen
        in every component, declared or not.
        """
        from lightning_mm.callbacks.placement import freeze_unused

        for component, placement in self.placements.items():
            placement.apply(self, component)
        for component in COMPONENTS:
            freeze_unused(self.component(component))

    def placement_table(self) -> list[dict[str, Any]]:
        """Per component: ``component``, ``mode``, ``trainable`` and ``total`` parameter counts, ``unused`` count."""
        from lightning_mm.callbacks.placement import placement_rows

        if self._unwrapped is not None:  # FSDP1: counted before the parameters became shards
            return [dict(row) for row in self._unwrapped["rows"]]
        return placement_rows({c: self.component(c) for c in COMPONENTS}, self.placements)

    def log_placements(self) -> None:
        """Print the placement table (component, mode, trainable / total params) and add it to TensorBoard."""
        from lightning_mm.callbacks.placement import format_placement_table

        rows = self.placement_table()
        rank_zero_info("Trainable parameters per component:\n" + format_placement_table(rows))
        if self._trainer is None or not self.trainer.is_global_zero:
            return
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                text = format_placement_table(rows, markdown=True)
                logger.experiment.add_text("placement", text, global_step=self.global_step)

    def on_fit_start(self) -> None:
        use_atomic_checkpoint_io(self.trainer)  # a run killed while writing never leaves a truncated last.ckpt
        self.log_placements()

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
        with unsharded(self.network, lm_head):  # FSDP2: the weight is read outside lm_head's forward
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
        """Log the micro-batch's token-mean loss and the supervised fraction of its real (non-padding) tokens."""
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        real = batch["attention_mask"].sum() if batch.get("attention_mask") is not None else batch["labels"].numel()
        frac = (batch["labels"] != -100).sum() / real
        self.log("train/supervised_fraction", frac, batch_size=batch["input_ids"].shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Token-exact normalisation: scale the summed-loss gradients by 1 / (targets in the window, all ranks).

        Lightning divides each micro-batch loss by ``accumulate_grad_batches`` and data-parallel strategies average
        gradients over ranks; both factors are undone here so the step's gradient is that of the window's token mean.
        DDP, FSDP1 and FSDP2 all average over ranks, and the scaling applies to sharded gradients as it is.
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

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping, except under FSDP1, where the norm is clipped by the root FSDP module.

        Lightning refuses ``gradient_clip_algorithm="norm"`` with ``FSDPStrategy`` (a plain ``clip_grad_norm_`` would
        see only the local shards); ``FullyShardedDataParallel.clip_grad_norm_`` computes the global norm.
        """
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = self.trainer.model if self._trainer is not None else None
        by_norm = gradient_clip_algorithm is None or gradient_clip_algorithm == "norm"
        if gradient_clip_val and by_norm and isinstance(model, FullyShardedDataParallel):
            model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

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
        with unsharded(self.network, lm_head):
            pred = lm_head(hidden[rows]).argmax(dim=-1)  # (N,)
        wrong = (pred != targets[rows]).float()
        n_wrong = torch.zeros(labels.shape[0], device=labels.device).index_add_(0, rows[0], wrong)  # (B,)
        has_target = (targets != -100).any(dim=1)
        return (n_wrong == 0) & has_target

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

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end generation: EOS and the chat template's end-of-turn token."""
        from lightning_mm.data.templates import get_template

        tok = self.tokenizer
        eot = get_template(self.spec.template).end_of_turn(tok)
        ids = [tok.eos_token_id, tok.convert_tokens_to_ids(eot)]
        return list(dict.fromkeys(i for i in ids if i is not None))

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the placements; with ``adapter_only_checkpoints``, drop the frozen weights from the state dict."""
        from lightning_mm.callbacks import checkpointing as ckpt

        state: dict[str, Any] = {
            "placements": {c: p.to_dict() for c, p in self.placements.items() if hasattr(p, "to_dict")},
            "adapter_only": bool(self.adapter_only_checkpoints),
        }
        if self.adapter_only_checkpoints:
            frozen = ckpt.frozen_parameter_names(self)
            weights = checkpoint["state_dict"]
            groups = [f"network.{c}." for c in COMPONENTS]
            state["base_fingerprint"] = ckpt.base_fingerprint({k: v for k, v in weights.items() if k in frozen}, groups)
            checkpoint["state_dict"] = ckpt.adapter_only_state(weights, frozen)
        checkpoint[ckpt.CHECKPOINT_KEY] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the stored placements (adapters included) before the weights load.

        A component without a declared placement takes the checkpoint's; one declared differently (e.g. by this run's
        callbacks) raises. An adapter-only state dict is completed with the freshly built base.
        """
        from lightning_mm.callbacks import checkpointing as ckpt
        from lightning_mm.callbacks.placement import Placement

        state = checkpoint.get(ckpt.CHECKPOINT_KEY) or {}
        for component, data in (state.get("placements") or {}).items():
            saved = Placement.from_dict(data)
            current = self.placements.get(component)
            if current is None:
                self.placements[component] = saved
            elif not current.same_weights(saved):
                raise ValueError(
                    f"The checkpoint trained the {component} as {saved.describe()!r}, but this run declares "
                    f"{current.describe()!r}. Resume with the checkpoint's placement, or start a new run from its "
                    "weights (MultimodalModule.load_from_checkpoint, then fit with the new placement)."
                )
        if self.network is None:
            self.configure_model()
        else:
            self.apply_placements()
        if state.get("adapter_only") and "state_dict" in checkpoint:  # sharding strategies loaded it themselves
            self._complete_adapter_only(checkpoint, state.get("base_fingerprint") or {})

    def _complete_adapter_only(self, checkpoint: dict[str, Any], fingerprint: dict[str, list[float]]) -> None:
        from lightning_mm.callbacks import checkpointing as ckpt

        weights = checkpoint["state_dict"]
        frozen = ckpt.frozen_parameter_names(self)
        base = {k: v for k, v in self.state_dict().items() if k not in weights}
        current = ckpt.base_fingerprint({k: v for k, v in base.items() if k in frozen}, fingerprint)
        mismatched = ckpt.fingerprint_mismatches(fingerprint, current)
        self.base_mismatch = [g.removeprefix("network.").rstrip(".") for g in mismatched]
        if mismatched:
            names = ", ".join(self.base_mismatch)
            rank_zero_warn(
                f"Adapter-only checkpoint: the frozen base of the {names} differs from the one the adapters were "
                "trained on (other pretrained weights, or a random init under another seed)."
            )
        weights.update(base)

    # ---------------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: per component, with and without weight decay; a placement's ``lr`` overrides."""
        from lightning_mm.distributed import split_decay_by_ndim

        groups = []
        for name in COMPONENTS:
            named = self.component(name).named_parameters()
            if self._unwrapped is not None:  # FSDP1: shapes from before wrapping (the shards are 1-D)
                decay, no_decay = split_decay_by_ndim(named, self._unwrapped["ndims"][name])
            else:
                decay, no_decay = split_decay(named)
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

    def _stepping_batches(self) -> int | float:
        """The trainer's ``estimated_stepping_batches``, without keeping a train loader built before a resume.

        The estimate builds the train loader when none is built yet, which (here, in ``configure_optimizers``)
        happens before a checkpoint is restored: Lightning would then never hand that loader its saved position, and
        a resumed run would start its epoch over. When a checkpoint is to be restored, the early loader is dropped, so
        the fit loop builds it again after the restore and loads its state (the exact next batch comes first).
        """
        trainer = self.trainer
        fit_loop = trainer.fit_loop
        built = fit_loop._combined_loader is not None
        total = trainer.estimated_stepping_batches
        if not built and trainer.ckpt_path is not None and fit_loop._combined_loader is not None:
            fit_loop._combined_loader = None
        return total

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.param_groups())
        total = self._stepping_batches()
        scheduler = build_scheduler(optimizer, total, self.warmup_ratio, self.schedule, self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
