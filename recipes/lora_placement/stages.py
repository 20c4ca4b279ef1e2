"""The experiment's stages. Each runs in its own worker process (or inline) and writes what the next stage reads.

* stage 0, vision: the tower trained as an image classifier on one attribute (timm state dict, ``model.safetensors``);
* stage 0, LLM: the language model trained on text alone (transformers ``save_pretrained`` directory);
* stage 1: the projector aligned alone on image -> caption (LLaVA's ``mm_projector.bin`` layout);
* stage 2 (:mod:`lora_placement.stage2`): one placement, LR and seed: fine-tuning on the held-out task, then measures.

Stage 1 (and stage 2) are :class:`~lightning_mm.MultimodalModule` + placement callbacks + a Lightning ``Trainer``; the stage-0
outputs enter them the way a user would load pretrained weights: ``vision_kwargs.pretrained_cfg_overlay.file`` for
timm, ``llm=<dir>`` for transformers, ``projector_weights=<file>`` for the projector, all with ``pretrained=True``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F

from lora_placement.config import accepts, deep_merge, import_object, instantiate, optimizer_factory, parse_placement

__all__ = [
    "STAGE_FILE",
    "build_stage_module",
    "make_trainer",
    "placement_callbacks",
    "run_stage0_llm",
    "run_stage0_vision",
    "run_stage1",
]

STAGE_FILE = "stage.json"  # written last: a stage directory without it is incomplete
COMPONENTS = ("vision", "projector", "llm")
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,
    "max_epochs": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


# Lightning notices that need no action here: single-process loaders of generated data, the frozen components that
# stay in eval mode (they hold no dropout), the classifier's fit without validation, a torch deprecation in Lightning.
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    r".*module\(s\) in eval mode at the start of training.*",
    ".*defined a `validation_step` but have no `val_dataloader`.*",
    ".*LeafSpec.*is deprecated.*",
)


def init_process(threads: int) -> None:
    """Per-process setup: CPU threads, quiet libraries (the experiment prints its own progress)."""
    torch.set_num_threads(max(int(threads), 1))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "timm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def make_trainer(section: Mapping[str, Any], **fixed: Any) -> L.Trainer:
    """A quiet single-device ``Trainer`` from a stage section's ``trainer`` settings (``fixed`` wins)."""
    return L.Trainer(**{**TRAINER_DEFAULTS, **(section.get("trainer") or {}), **fixed})


def _datamodule(section: Mapping[str, Any]) -> L.LightningDataModule:
    """The stage's datamodule; a synthetic one without ``train_samples`` gets exactly one epoch of ``max_steps``."""
    spec = dict(section["data"])
    args = dict(spec.get("init_args") or {})
    trainer = section.get("trainer") or {}
    cls = import_object(spec["class_path"])
    if "train_samples" not in args and trainer.get("max_steps", -1) > 0 and accepts(cls, "train_samples"):
        devices = trainer.get("devices", 1)
        per_step = args.get("batch_size", 32) * trainer.get("accumulate_grad_batches", 1)
        args["train_samples"] = trainer["max_steps"] * per_step * (devices if isinstance(devices, int) else 1)
    return cls(**args)


def _write_stage(directory: Path, info: dict[str, Any]) -> dict[str, Any]:
    (directory / STAGE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def _validate(section: Mapping[str, Any], module: L.LightningModule, data: L.LightningDataModule) -> dict[str, float]:
    results = make_trainer(section, limit_val_batches=1.0).validate(module, datamodule=data, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def _fit(
    section: Mapping[str, Any], module: L.LightningModule, data: L.LightningDataModule, callbacks=()
) -> tuple[float, float]:
    """Train (no validation during the run); returns the wall time and this process's CPU time of ``fit``, in s."""
    trainer = make_trainer(section, limit_val_batches=0, callbacks=list(callbacks))
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=data)
    return time.perf_counter() - start, time.process_time() - cpu


def build_stage_module(
    config: Mapping[str, Any], section: Mapping[str, Any], sources: Mapping[str, Any], pretrained: bool
) -> Any:
    """A :class:`~lightning_mm.MultimodalModule` for a stage (network not built yet).

    Args:
        config: The experiment config (its ``model`` section names the zoo model and spec overrides).
        section: The stage's section (``optimizer``, ``module`` keyword arguments).
        sources: Spec overrides that point at earlier stages' outputs (``llm``, ``vision_kwargs``,
            ``projector_weights``).
        pretrained: Load the weights the spec names.
    """
    from lightning_mm import MultimodalModule

    model = config["model"]
    overrides = deep_merge(model.get("overrides") or {}, sources)
    return MultimodalModule(
        model=model["name"],
        model_overrides=overrides or None,
        pretrained=pretrained,
        optimizer=optimizer_factory(section["optimizer"]),
        **(section.get("module") or {}),
    )


def placement_callbacks(components: Mapping[str, Any], placement: str) -> list[Any]:
    """One placement callback per component: the letters' callbacks, ``FreezeComponent`` for every other component.

    Args:
        components: Letter (``V``, ``P``, ``L``) -> ``{"class_path", "init_args"}`` of the callback that trains it;
            ``init_args.component`` names the component.
        placement: ``none`` or letters joined by ``+`` (``V+P+L``).
    """
    from lightning_mm.callbacks import FreezeComponent

    callbacks = [instantiate(components[letter]) for letter in parse_placement(placement)]
    trained = {cb.component for cb in callbacks}
    return callbacks + [FreezeComponent(c) for c in COMPONENTS if c not in trained]


# ---------------------------------------------------------------------------------------------------- stage 0
class TowerClassifier(L.LightningModule):
    """A timm tower with a classification head, trained with cross-entropy (stage 0 of the vision tower).

    Args:
        model_name: timm architecture.
        model_kwargs: ``timm.create_model`` arguments (the zoo spec's ``vision_kwargs``).
        num_classes: Number of classes.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_ratio: Fraction of the steps in linear warm-up before the cosine decay.
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict[str, Any],
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_ratio: float = 0.05,
    ) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_kwargs)
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch  # (B, 3, H, W), (B,)
        return F.cross_entropy(self.model(images), labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        correct = (self.model(images).argmax(dim=-1) == labels).float().mean()
        self.log("val/accuracy", correct, batch_size=labels.shape[0])

    def configure_optimizers(self):
        from lightning_mm.optim import build_scheduler

        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = build_scheduler(optimizer, self.trainer.estimated_stepping_batches, self.warmup_ratio, "cosine")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def run_stage0_vision(config: Mapping[str, Any], out_dir: str, fp: str, threads: int = 1) -> dict[str, Any]:
    """Pretrain the vision tower as a classifier of one attribute; write ``model.safetensors`` (timm state dict)."""
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader

    from lightning_mm.data.synthetic import SyntheticImageDataset
    from lightning_mm.zoo import count_image_tokens, get_spec

    init_process(threads)
    section = config["stage0"]["vision"]
    L.seed_everything(section.get("seed", 0), verbose=False)
    spec = get_spec(config["model"]["name"]).replace(**(config["model"].get("overrides") or {}))
    data_config = count_image_tokens(spec)[1]
    kwargs = {k: v for k, v in spec.vision_kwargs.items() if k != "pretrained_cfg_overlay"}
    steps, batch = int(section["steps"]), int(section.get("batch_size", 64))
    target, data_seed = section.get("target", "shape"), int(section.get("data_seed", 30))
    train = SyntheticImageDataset(data_config, steps * batch, seed=data_seed, target=target)
    val = SyntheticImageDataset(data_config, int(section.get("val_samples", 1000)), seed=data_seed + 1, target=target)
    module = TowerClassifier(
        spec.vision_model,
        kwargs,
        len(train.classes),
        lr=float(section.get("lr", 1e-3)),
        weight_decay=float(section.get("weight_decay", 0.05)),
        warmup_ratio=float(section.get("warmup_ratio", 0.05)),
    )
    trainer_section = {"trainer": {"max_steps": steps, **(section.get("trainer") or {})}}
    start, cpu = time.perf_counter(), time.process_time()
    make_trainer(trainer_section, limit_val_batches=0).fit(module, DataLoader(train, batch_size=batch, shuffle=True))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    val_loader = DataLoader(val, batch_size=256)
    results = make_trainer(trainer_section).validate(module, val_loader, verbose=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in module.model.state_dict().items()}, out / "model.safetensors")
    accuracy = float(results[0]["val/accuracy"])
    info = {
        "fingerprint": fp,
        "target": target,
        "val_accuracy": accuracy,
        "fit_seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
    }
    return _write_stage(out, info)


def run_stage0_llm(config: Mapping[str, Any], out_dir: str, fp: str, threads: int = 1) -> dict[str, Any]:
    """Pretrain the language model on text alone; write it (and the tokenizer) with ``save_pretrained``."""
    from lightning_mm.callbacks import FreezeComponent

    init_process(threads)
    section = config["stage0"]["llm"]
    L.seed_everything(section.get("seed", 0), verbose=False)
    module = build_stage_module(config, section, {}, pretrained=False)
    data = _datamodule(section)
    frozen = [FreezeComponent("vision"), FreezeComponent("projector")]  # no image in the data: only the LLM learns
    seconds, cpu = _fit(section, module, data, frozen)
    metrics = _validate(section, module, data)
    out = Path(out_dir)
    module.network.llm.save_pretrained(out)
    module.tokenizer.save_pretrained(out)
    info = {
        "fingerprint": fp,
        "val_loss": metrics.get("val/loss"),
        "fit_seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
    }
    return _write_stage(out, info)


# ---------------------------------------------------------------------------------------------------- stage 1
def run_stage1(
    config: Mapping[str, Any], sources: Mapping[str, Any], out_dir: str, fp: str, threads: int = 1
) -> dict[str, Any]:
    """Align the projector alone (tower and LLM frozen); write it as ``mm_projector.bin``."""
    from lightning_mm.callbacks import FreezeComponent, FullComponent
    from lightning_mm.models.projector_io import save_projector_weights

    init_process(threads)
    section = config["stage1"]
    L.seed_everything(section.get("seed", 0), verbose=False)
    module = build_stage_module(config, section, sources, pretrained=True)
    data = _datamodule(section)
    callbacks = [FreezeComponent("vision"), FullComponent("projector"), FreezeComponent("llm")]
    seconds, cpu = _fit(section, module, data, callbacks)
    metrics = _validate(section, module, data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_projector_weights(module.network.projector, out / "mm_projector.bin")
    info = {
        "fingerprint": fp,
        "val_loss": metrics.get("val/loss"),
        "val_answer_accuracy": metrics.get("val/answer_accuracy"),
        "fit_seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
    }
    return _write_stage(out, info)
