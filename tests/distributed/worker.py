"""Training runs for the distributed tests: run as a script for multi-process runs, imported for single-process ones.

``python tests/distributed/worker.py grads OUT``: one optimiser step on 2 CPU processes (gloo) x 4 samples: DDP with the
token-exact and the naive mean, FSDP2 token-exact; rank 0 saves the gradients to OUT.

``python tests/distributed/worker.py text_only OUT --strategy ddp`` (or ``fsdp2``): two SGD steps of the
placed tiny model in float64 on 2 processes x 2 samples, both ranks text-only, then rank 0 text-only / rank 1 images;
rank 0 saves each step's gradients of the trainable parameters to OUT.

``python tests/distributed/worker.py fsdp2 OUT_DIR --variants ...``: the tiny model (LLM LoRA, full
projector, frozen tower) trained for 2 epochs of 2 steps on 2 CPU processes, per variant of :func:`run_sharded`;
rank 0 saves the per-step global losses, the trained weights and, for ``uninterrupted``, metrics and predictions.

Lightning's launcher starts rank 1 by running this script again with ``LOCAL_RANK=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import AdapterOnlyCheckpoint, FreezeComponent, FullComponent, LoRAComponent
from lightning_mm.data import SyntheticVQADataModule, VLMCollator
from lightning_mm.distributed import VLMModelParallelStrategy
from lightning_mm.loss import count_supervised
from lightning_mm.placement import DropoutLinear

# Supervised targets kept per sample (of 6: three one-word answers + end-of-turn tokens). Unequal for every split the
# test uses: micro-batches of 2 hold 3, 12, 4, 7 targets; the two DDP ranks (samples 0,2,4,6 / 1,3,5,7) 12 and 14.
KEEP = (1, 2, 6, 6, 3, 1, 2, 5)


class PartlySupervised(Dataset):
    """Keeps only the first ``keep[i]`` supervised labels of sample ``i`` (the rest become -100)."""

    def __init__(self, base: Dataset, keep: tuple[int, ...]) -> None:
        self.base, self.keep = base, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.base[i])
        labels = sample["labels"].clone()
        rows = (labels != -100).nonzero().squeeze(1)
        labels[rows[self.keep[i] :]] = -100
        sample["labels"] = labels
        return sample


def ordered_loader(dm: SyntheticVQADataModule, ds: Dataset) -> DataLoader:
    """Unshuffled batches; with several ranks, rank r takes samples r, r + world, ... (Lightning would shuffle)."""
    trainer = dm.trainer
    sampler = None
    if trainer is not None and trainer.world_size > 1:
        sampler = DistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)
    collate = VLMCollator(dm.tokenizer.pad_token_id, "right", dm.image_token_id, dm.contract.num_image_tokens)
    return DataLoader(ds, batch_size=dm.batch_size, sampler=sampler, collate_fn=collate)


class UnequalVQA(SyntheticVQADataModule):
    """8 synthetic samples (3 questions each) in a fixed order, with the supervision of :data:`KEEP`."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(train_samples=len(KEEP), val_samples=4, batch_size=batch_size, train_questions_per_image=3)

    def train_dataloader(self):
        return ordered_loader(self, PartlySupervised(self._dataset(len(KEEP), self.seed, questions_per_image=3), KEEP))


class OrderedVQA(SyntheticVQADataModule):
    """The synthetic task without shuffling: the same batches in the same order in every run."""

    def train_dataloader(self):
        return ordered_loader(self, self._dataset(self.train_samples, self.seed))


class TextThenMixed(Dataset):
    """Samples 0-3 text-only; 4-7 text-only at even indices, with an image at odd ones (``text``, ``images``)."""

    def __init__(self, text: Dataset, images: Dataset) -> None:
        self.text, self.images = text, images

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, Any]:
        return (self.text if i < 4 or i % 2 == 0 else self.images)[i]


class MixedModalities(SyntheticVQADataModule):
    """8 ordered synthetic samples (:class:`TextThenMixed`), two questions each. On 2 ranks x 2 samples: step 1 both
    ranks text-only, step 2 rank 0 text-only (samples 4, 6) and rank 1 with images (5, 7)."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(train_samples=8, val_samples=4, batch_size=batch_size, train_questions_per_image=2)

    def train_dataloader(self):
        self.mode = "text"
        text = self._dataset(8, self.seed, questions_per_image=2)
        self.mode = "vqa"
        return ordered_loader(self, TextThenMixed(text, self._dataset(8, self.seed, questions_per_image=2)))


class SeededModule(MultimodalModule):
    """Builds its network under a fixed seed, so every run and every rank starts from the same weights.

    Args:
        init_seed: Seed set right before the network (and its LoRA adapters) is built.
        **kwargs: :class:`~lightning_mm.MultimodalModule` arguments.
    """

    def __init__(self, init_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_seed = init_seed

    def configure_model(self) -> None:
        if self.network is None:
            torch.manual_seed(self.init_seed)
        super().configure_model()


class Float64Module(SeededModule):
    """The network built as usual, then cast to float64 (FSDP refuses Lightning's ``64-true``)."""

    def build_network(self):
        return super().build_network().to(torch.float64)


class GlobalLoss(Callback):
    """Per step: the token mean of the loss over every rank's micro-batch (summed losses / summed targets)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pair = torch.stack([outputs["loss"].detach().float(), count_supervised(batch["labels"]).float()])
        total = trainer.strategy.reduce(pair, reduce_op="sum") if trainer.world_size > 1 else pair
        self.losses.append(float(total[0] / total[1]))


class StopAfterEpoch(Callback):
    """Ends the run after its first epoch, as if it were killed there (the LR schedule still spans every epoch)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-12))


def _trainer(root: Path, strategy: Any, devices: int, callbacks: list, **kwargs: Any) -> L.Trainer:
    kwargs.setdefault("limit_val_batches", 0)
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the loaders shard the data themselves, in order
        default_root_dir=root,
        callbacks=callbacks,
        **kwargs,
    )


def sgd(params):
    """Plain SGD (lr 1, no momentum): the step only matters through the gradients it leaves."""
    return torch.optim.SGD(params, lr=1.0)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP2 gradients are sharded DTensors


def one_step_grads(
    root: Path, batch_size: int, accumulate: int, normalization: str, strategy: Any = "auto", devices: int = 1
) -> dict[str, torch.Tensor]:
    """Gradients of the first optimiser step on :class:`UnequalVQA` (as the module leaves them, normalised)."""
    L.seed_everything(0, verbose=False)
    module = SeededModule(model="tiny", optimizer=sgd, warmup_ratio=0.0, loss_normalization=normalization)
    trainer = _trainer(root, strategy, devices, [], max_steps=1, accumulate_grad_batches=accumulate)
    trainer.fit(module, UnequalVQA(batch_size))
    return {n: _full(p.grad).detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def trainable_gradients(trainer: L.Trainer) -> dict[str, torch.Tensor]:
    """Whole gradients of the trainable parameters, by name (every rank must call this under FSDP2)."""
    named = trainer.lightning_module.named_parameters
    return {n: _full(p.grad).detach().clone() for n, p in named() if p.requires_grad and p.grad is not None}


class StepGradients(Callback):
    """The trainable parameters' gradients after each optimiser step (reduced and normalised; SGD leaves them)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(trainable_gradients(trainer))


def text_only_grads(
    root: Path, strategy: Any, devices: int, batch_size: int, plugins: list | None = None
) -> list[dict[str, torch.Tensor]]:
    """Per step, the gradients of 2 SGD steps of the placed tiny model, in float64 with activation checkpointing, on
    :class:`MixedModalities`."""
    L.seed_everything(0, verbose=False)
    module = Float64Module(model="tiny", optimizer=sgd, warmup_ratio=0.0, activation_checkpointing=True)
    recorder = StepGradients()
    callbacks = [*placement_callbacks(), recorder]
    trainer = _trainer(root, strategy, devices, callbacks, max_steps=2, plugins=plugins)
    trainer.fit(module, MixedModalities(batch_size))
    return recorder.steps


def placement_callbacks(lora_dropout: float = 0.0) -> list:
    return [
        FreezeComponent("vision"),
        FullComponent("projector", lr=2e-3),
        LoRAComponent("llm", r=4, alpha=8.0, dropout=lora_dropout),
    ]


def adamw(params):
    return torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)


def ordered_data(batch_size: int) -> OrderedVQA:
    return OrderedVQA(train_samples=16, val_samples=4, batch_size=batch_size, predict_samples=4)


def fit_placed(
    root: Path,
    strategy: Any,
    devices: int,
    batch_size: int,
    stop_after_epoch: bool = False,
    ckpt_path: str | None = None,
    adapter_only: bool = False,
    activation_checkpointing: bool = False,
    precision: str = "32-true",
    validate: bool = False,
    lora_dropout: float = 0.0,
) -> tuple[MultimodalModule, L.Trainer, list[float]]:
    """The tiny model with LLM LoRA + full projector on 16 ordered samples (global batch 8: 2 steps per epoch).

    Two epochs (4 steps), or only the first one with ``stop_after_epoch``; ``validate`` adds a sanity check and one
    validation batch per epoch (evaluation between training steps).
    """
    L.seed_everything(0, verbose=False)
    module = SeededModule(
        model="tiny", optimizer=adamw, warmup_ratio=0.0, activation_checkpointing=activation_checkpointing
    )
    recorder = GlobalLoss()
    callbacks = [*placement_callbacks(lora_dropout), recorder, *([AdapterOnlyCheckpoint()] if adapter_only else [])]
    callbacks += [StopAfterEpoch()] if stop_after_epoch else []
    val = {"limit_val_batches": 1, "num_sanity_val_steps": 1} if validate else {}
    trainer = _trainer(
        root, strategy, devices, callbacks, max_epochs=2, gradient_clip_val=1.0, precision=precision, **val
    )
    trainer.fit(module, ordered_data(batch_size), ckpt_path=ckpt_path)
    return module, trainer, recorder.losses


def check_dropout_run(result: dict[str, Any], reference_losses: list[float]) -> None:
    """The ``dropout`` variant: every adapted LLM linear fused, and training that follows the run without dropout.

    LoRA's ``B`` starts at zero, so the first loss is the reference's exactly; afterwards dropout makes the losses
    differ, by little.
    """
    assert result["fused_dropout_layers"] == 14  # 2 decoder layers x q/k/v/o/gate/up/down
    losses = torch.tensor(result["losses"])
    reference = torch.tensor(reference_losses)
    assert losses.shape == reference.shape and bool(torch.isfinite(losses).all())
    torch.testing.assert_close(losses[0], reference[0], rtol=1e-5, atol=0)
    assert not torch.equal(losses[1:], reference[1:])  # dropout was active
    torch.testing.assert_close(losses, reference, rtol=0.05, atol=0)


def evaluate(trainer: L.Trainer, module: MultimodalModule, batch_size: int) -> dict[str, Any]:
    """Validation metrics and greedy predictions of the trained module (every rank sees all 4 samples)."""
    data = ordered_data(batch_size)
    metrics = trainer.validate(module, data, verbose=False)[0]
    predictions = [p["prediction"] for batch in trainer.predict(module, data) for p in batch]
    return {"val": {k: float(v) for k, v in metrics.items()}, "predictions": predictions}


def optimizer_layout(trainer: L.Trainer) -> dict[str, Any]:
    """Optimiser groups (name, parameter count, weight decay) and the placement table, as the run set them up."""
    groups = [[g["name"], len(g["params"]), g["weight_decay"]] for g in trainer.optimizers[0].param_groups]
    return {"groups": groups, "placement_table": trainer.lightning_module.placement_table()}


def full_trained_state(trainer: L.Trainer) -> dict[str, torch.Tensor]:
    """The trained parameters, gathered whole (every rank must call this; rank 0 gets the tensors)."""
    module = trainer.lightning_module
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().clone() for k, v in state.items() if k in trainable}


def _strategy(kind: str, sharded: bool):
    if kind == "ddp":  # a collective left waiting fails after a minute instead of the default 30
        return DDPStrategy(timeout=timedelta(seconds=60))
    return VLMModelParallelStrategy(save_distributed_checkpoint=sharded)


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def run_sharded(kind: str, out: Path, variants: list[str], activation_checkpointing: bool = False) -> None:
    """Per variant, 2 epochs of the placed tiny model on 2 processes; rank 0 writes losses and trained weights.

    ``sharded``, ``full``, ``adapter_sharded``, ``adapter_full``: epoch 1, save that kind of checkpoint, resume to
    epoch 2. ``uninterrupted``: both epochs in one run, validating during and after it, then predicting;
    ``bf16``: both epochs in ``bf16-mixed``; ``dropout``: both epochs with LoRA dropout 0.1 (fused ``DropoutLinear``).
    """
    results: dict[str, Any] = {}
    for variant in variants:
        sharded, adapter_only = variant.endswith("sharded"), variant.startswith("adapter")
        root = out / variant
        root.mkdir(parents=True, exist_ok=True)
        ckpt = root / ("epoch1" if sharded else "epoch1.ckpt")
        result: dict[str, Any] = {"checkpoint": str(ckpt)}
        kwargs = {"activation_checkpointing": activation_checkpointing}
        if variant == "dropout":
            module, trainer, losses = fit_placed(root, _strategy(kind, sharded), 2, 4, lora_dropout=0.1, **kwargs)
            state = full_trained_state(trainer)
            result["fused_dropout_layers"] = sum(isinstance(m, DropoutLinear) for m in module.modules())
        elif variant in ("uninterrupted", "bf16"):
            kwargs["precision"] = "bf16-mixed" if variant == "bf16" else "32-true"
            module, trainer, losses = fit_placed(root, _strategy(kind, sharded), 2, 4, validate=True, **kwargs)
            state = full_trained_state(trainer)
            if variant == "uninterrupted":
                result.update(evaluate(trainer, module, 4))
        else:
            kwargs["adapter_only"] = adapter_only
            _, trainer, losses = fit_placed(root, _strategy(kind, sharded), 2, 4, stop_after_epoch=True, **kwargs)
            trainer.save_checkpoint(ckpt)
            strategy = _strategy(kind, sharded)
            _, trainer, second = fit_placed(root, strategy, 2, 4, ckpt_path=str(ckpt), **kwargs)
            losses += second
            state = full_trained_state(trainer)
        if trainer.is_global_zero:
            torch.save(state, root / "trained.pt")
            results[variant] = {**result, **optimizer_layout(trainer), "losses": losses}
    if _is_rank_zero():
        (out / "results.json").write_text(json.dumps(results))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["grads", "fsdp2", "text_only"])
    parser.add_argument("out")
    parser.add_argument("--variants", default="sharded")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--strategy", choices=["ddp", "fsdp2"], default="ddp")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.mode == "grads":
        runs = {"ddp/tokens": ("ddp", "tokens"), "ddp/mean": ("ddp", "mean"), "fsdp2/tokens": (None, "tokens")}
        grads = {}
        for name, (strategy, norm) in runs.items():
            strategy = strategy or VLMModelParallelStrategy()
            grads[name] = one_step_grads(out.parent / name, 4, 1, norm, strategy=strategy, devices=2)
        if _is_rank_zero():
            torch.save(grads, out)
        return
    if args.mode == "text_only":
        grads = text_only_grads(out.parent / args.strategy, _strategy(args.strategy, False), 2, 2)
        if _is_rank_zero():
            torch.save(grads, out)
        return
    run_sharded(args.mode, out, args.variants.split(","), args.activation_checkpointing)


if __name__ == "__main__":
    main(sys.argv[1:])
