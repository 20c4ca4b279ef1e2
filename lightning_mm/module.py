"""MultimodalModule: the LightningModule that trains, validates and runs a VisionLanguageModel."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_mm.checkpoint.file import check_checkpoint_file
from lightning_mm.checkpoint.io import use_atomic_checkpoint_io
from lightning_mm.checkpoint.read import checkpoint_errors, local_checkpoint, refuse_unsafe_loading
from lightning_mm.checkpoint.state import load_module_state, save_module_state
from lightning_mm.data.contract import DataContract
from lightning_mm.data.images import ASPECT_MODES
from lightning_mm.data.layout import ImageLayout
from lightning_mm.declared_placements import COMPONENTS, DeclaredPlacements, check_component
from lightning_mm.distributed.setup import check_strategy, shard_for_strategy
from lightning_mm.errors import check_choice, check_range
from lightning_mm.evaluation_steps import EvaluationSteps
from lightning_mm.loss import count_supervised, mask_sample_starts
from lightning_mm.models import VisionLanguageModel
from lightning_mm.models.compiled import FirstStepTimer, compile_regions
from lightning_mm.optim import SCHEDULES, build_scheduler, split_decay
from lightning_mm.zoo import ModelSpec, build_network, count_image_tokens, get_spec, load_tokenizer
from lightning_mm.zoo.checks import check_spec
from lightning_mm.zoo.contract import data_contract, image_token_id
from lightning_mm.zoo.hf import absolute_hf_name

__all__ = ["COMPONENTS", "MultimodalModule"]

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]


class MultimodalModule(DeclaredPlacements, EvaluationSteps, L.LightningModule):
    """Trains a LLaVA-style vision-language model with the shifted, masked causal-LM loss.

    The network is built in ``configure_model`` (lazily and once), so strategies that shard (FSDP) build it where it
    belongs, and placement callbacks declared in ``setup`` are applied before any wrapping; under
    ``ModelParallelStrategy`` it is sharded there with FSDP2 (:mod:`lightning_mm.distributed`). Outside a Trainer, call
    ``configure_model()`` yourself (``create_model`` does).

    Placements (frozen / full / LoRA per component) are hyperparameters of the module (``hparams.placements``), usually
    declared by the placement callbacks (:mod:`lightning_mm.callbacks`) through :meth:`set_placement`; checkpoints
    carry them with the other hyperparameters, so ``load_from_checkpoint`` and ``fit(ckpt_path=...)`` rebuild the
    adapters before the weights load. Without a placement every component trains, except a vision tower's blocks
    after its feature layer (they never run).

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
        placements: Component -> placement, in :meth:`~lightning_mm.callbacks.Placement.to_dict` form
            (``{"llm": {"mode": "lora", "r": 8}}``); the placement callbacks are the usual way to declare them.
        image_aspect: How an image is fitted to the tower's fixed-size input: ``pad`` (to a square with the mean
            colour, LLaVA-1.5), ``resize`` or ``crop``. Part of the model: the datamodules, ``chat`` and
            ``export`` read it from the checkpoint. Families whose layout cuts images themselves (tiling, image
            splitting) do not read it.
        compile: Compile each vision block and LLM decoder layer in place with ``torch.compile``, last in
            ``configure_model`` (after the placements, activation checkpointing and sharding; state-dict keys
            unchanged), for training steps only (evaluation and generation run eagerly). The first training step
            pays the compilation, reported once in the log (:mod:`lightning_mm.models.compiled`).
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
        placements: dict[str, dict[str, Any]] | None = None,
        image_aspect: str = "pad",
        compile: bool = False,
    ) -> None:
        super().__init__()
        check_choice("loss_normalization", loss_normalization, ("tokens", "mean"))
        check_choice("image_aspect", image_aspect, ASPECT_MODES)
        check_choice("schedule", schedule, SCHEDULES)
        check_range("warmup_ratio", warmup_ratio, 0, 1)
        check_range("min_lr_ratio", min_lr_ratio, 0, 1)
        check_range("loss_chunk_size", loss_chunk_size, 1)
        check_range("max_new_tokens", max_new_tokens, 1)
        keywords = getattr(optimizer, "keywords", None)  # a functools.partial's (the CLI's): its lr
        check_range("optimizer lr", keywords.get("lr") if isinstance(keywords, dict) else None, 0)
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
        self.image_aspect = image_aspect
        self.compile_regions = compile  # (``self.compile`` is nn.Module's method)
        self._compile_timer: FirstStepTimer | None = None
        self.network: VisionLanguageModel | None = None
        self.declare_placements(placements)
        self.base_mismatch: list[str] = []  # components whose base differed from an adapter-only checkpoint's
        self._tokenizer = None
        self._image_geometry: tuple[int, dict[str, Any]] | None = None
        self._data_contract: DataContract | None = None
        self._window_items = 0  # supervised targets seen since the last optimiser step (this rank)
        self.init_evaluation_metrics()

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
    def data_contract(self) -> DataContract:
        """What the data side needs from this model (:class:`~lightning_mm.data.DataContract`): tokenizer, image-token
        id, the family's image layout, image preprocessing with :attr:`image_aspect`, chat template and stop ids. The
        datamodules bind to it in ``setup``; ``predict``, ``chat`` and ``export`` read it."""
        if self._data_contract is None:
            self._data_contract = data_contract(self.spec, self.tokenizer, self.image_aspect)
        return self._data_contract

    @property
    def image_layout(self) -> ImageLayout:
        """How images become tiles and prompt ids (the contract's layout; never None)."""
        return self.data_contract.layout

    @property
    def image_token_id(self) -> int:
        """Id of the image placeholder token."""
        return image_token_id(self.spec, self._tokenizer if self.spec.image_token_id is not None else self.tokenizer)

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end generation: EOS and the chat template's end-of-turn token."""
        return self.data_contract.stop_token_ids

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
        """Lightning's ``load_from_checkpoint``, weights-only, after a short error for a missing or truncated file.

        A whole checkpoint (not adapter-only) builds the network from its configs and loads its weights: the
        pretrained weights the model started from are not read (:mod:`lightning_mm.checkpoint.state`).

        The file is always loaded weights-only (tensors and plain data; :mod:`lightning_mm.checkpoint.read`), an
        ``http(s)://`` one too (downloaded first, into a temporary folder): a checkpoint that holds anything else is
        refused, unloaded, with an :class:`~lightning_mm.checkpoint.read.UnsafeCheckpointError` naming it.
        ``weights_only=False`` is refused.
        """
        refuse_unsafe_loading(weights_only, "load_from_checkpoint(weights_only=...)")
        with local_checkpoint(checkpoint_path) as local:
            check_checkpoint_file(local, name=checkpoint_path)
            with checkpoint_errors(checkpoint_path):
                return super().load_from_checkpoint(
                    local, map_location, hparams_file, strict, weights_only=True, **kwargs
                )

    def build_network(self) -> VisionLanguageModel:
        """Build the plain-torch network (override to change the architecture, e.g. another projector)."""
        tokenizer = self.tokenizer if self.spec.needs_tokenizer else self._tokenizer  # a complete spec builds offline
        quantization = self.llm_quantization() if self.pretrained else None  # QLoRA: quantised while loading
        return build_network(self.spec, tokenizer, pretrained=self.pretrained, llm_quantization=quantization)

    def configure_model(self) -> None:
        """Build the network once, apply the declared placements and activation checkpointing, shard it, compile it.

        Under a Trainer the strategy is checked first (:func:`~lightning_mm.distributed.check_strategy`: clear errors
        for settings that cannot work); with a device mesh (``ModelParallelStrategy``) the network is sharded with
        FSDP2, unit by unit (:func:`~lightning_mm.distributed.fully_shard_network`). With ``compile`` on, each block
        is then compiled in place (:func:`~lightning_mm.models.compiled.compile_regions`), around what the steps
        before put in it (LoRA layers, checkpointing).
        """
        if self.network is None:
            self.network = self.build_network()
            self.apply_placements()
            if self.activation_checkpointing:
                self.network.enable_activation_checkpointing()
        if self._trainer is not None:
            use_atomic_checkpoint_io(self.trainer)  # before a checkpoint is restored: weights-only, URLs too
            self.apply_storage(self.trainer)  # frozen weights in the compute dtype; quantised + FSDP2 refused
            check_strategy(self, self.trainer)
            shard_for_strategy(self)
        if self.compile_regions and self._compile_timer is None:
            self._compile_timer = FirstStepTimer(len(compile_regions(self.network)))

    def on_fit_start(self) -> None:
        use_atomic_checkpoint_io(self.trainer)  # a run killed while writing never leaves a truncated last.ckpt
        self.log_placements()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._compile_timer is not None:
            self._compile_timer.start()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        report = self._compile_timer.stop() if self._compile_timer is not None else None
        if report:
            rank_zero_info(report)

    def component(self, name: str) -> nn.Module:
        """The ``vision``, ``projector`` or ``llm`` submodule of the network."""
        check_component(name)
        if self.network is None:
            raise RuntimeError("The network is not built yet: call configure_model() first.")
        return getattr(self.network, name)

    # ---------------------------------------------------------------- forward and loss
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T, H) final hidden states for a collated batch."""
        return self.network(
            batch["input_ids"],
            batch.get("attention_mask"),
            batch.get("pixel_values"),
            image_sizes=batch.get("image_sizes"),  # tiling models: (N_img, 2)
            tiles_per_image=batch.get("tiles_per_image"),  # (N_img,)
            position_ids=batch.get("position_ids"),  # packed rows: positions restart at each sample
            prefix_mask=batch.get("prefix_mask"),  # prefix-LM models: (B, T) each sample's prefix
        )

    def compute_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed shifted cross-entropy over supervised targets, and their count.

        Args:
            hidden: (B, T, H) final hidden states.
            labels: (B, T) labels, -100 where nothing is supervised.

        Returns:
            (loss summed over supervised targets, number of supervised targets), both 0-dim tensors.
        """
        return self.network.lm_loss(hidden, labels, chunk_size=self.loss_chunk_size), count_supervised(labels)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hidden = self(batch)  # (B, T, H)
        labels = mask_sample_starts(batch["labels"], batch.get("position_ids"))  # packed rows: no cross-sample target
        loss_sum, n_items = self.compute_loss(hidden, labels)
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

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Mark the checkpoint whole or adapter-only (:func:`~lightning_mm.checkpoint.state.save_module_state`)."""
        save_module_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Placements and adapters in place before the weights load; an adapter-only state dict completed.

        A component without a declared placement takes the checkpoint's; one declared differently (e.g. by this run's
        callbacks) raises (:func:`~lightning_mm.checkpoint.state.load_module_state`).
        """
        load_module_state(self, checkpoint)

    # ---------------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: per component, with and without weight decay; a placement's ``lr`` overrides."""
        groups = []
        placements = self.placements
        for name in COMPONENTS:
            decay, no_decay = split_decay(self.component(name).named_parameters())
            extra = {}
            lr = getattr(placements.get(name), "lr", None)
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
