"""Stage 2: one placement, one learning rate, one seed: fine-tune on the held-out-combination task, then measure.

A ``sweep`` run is scored on the validation splits only (it chooses the learning rate); a ``final`` run and the
``baseline`` (``none``: the stage-1 model, nothing trained) are also scored on the test splits, on the finite training
set, on the LLM's text-only task and by a linear probe of the tower (the forgetting measures).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from lora_placement.config import deep_merge, instantiate, parse_placement
from lora_placement.measure import answer_accuracy, probe_accuracy, text_task_accuracy
from lora_placement.stages import build_stage_module, init_process, make_trainer, placement_callbacks

__all__ = ["PHASES", "run_stage2"]

PHASES = ("baseline", "sweep", "final")


def _section_with_lr(section: Mapping[str, Any], lr: float | None) -> dict[str, Any]:
    if lr is None:
        return dict(section)
    return deep_merge(section, {"optimizer": {"init_args": {"lr": float(lr)}}})


def run_stage2(
    config: Mapping[str, Any],
    sources: Mapping[str, Any],
    placement: str,
    seed: int,
    lr: float | None,
    phase: str,
    out_file: str,
    fp: str,
    threads: int = 1,
) -> dict[str, Any]:
    """Fine-tune one placement (``none``: no training) and measure it; the record is also written to ``out_file``.

    Args:
        config: The experiment config.
        sources: Spec overrides pointing at the stage-0/1 outputs.
        placement: ``none`` or letters joined by ``+``.
        seed: Seed of the run: data order, adapter initialisation and the training draw (which images).
        lr: Peak learning rate of every trained parameter (``None`` for ``none``).
        phase: ``baseline``, ``sweep`` or ``final``.
        out_file: Where the record goes (JSON).
        fp: Fingerprint of the run's settings (stored in the record for the cache).
        threads: Torch CPU threads.
    """
    if phase not in PHASES:
        raise ValueError(f"Unknown phase {phase!r}; phases are {PHASES}")
    init_process(threads)
    section = _section_with_lr(config["stage2"], lr)
    L.seed_everything(seed, verbose=False)
    module = build_stage_module(config, section, sources, pretrained=True)
    data = instantiate(section["data"], draw_seed=seed)
    callbacks = placement_callbacks(section["components"], placement)
    seconds = cpu = 0.0
    if parse_placement(placement):
        trainer = make_trainer(section, limit_val_batches=0, callbacks=callbacks)
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.fit(module, datamodule=data)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        steps, epochs = int(module.global_step), int(trainer.current_epoch)
    else:  # the stage-1 model as it is
        module.configure_model()
        for cb in callbacks:
            module.set_placement(cb.component, cb.placement)
        steps = epochs = 0
    data.bind(module.data_contract)
    eval_start = time.process_time()
    splits = ("val_seen", "val_unseen") + (("test_seen", "test_unseen") if phase != "sweep" else ())
    accuracy = {split: answer_accuracy(module, data.eval_dataloader(split)) for split in splits}
    record: dict[str, Any] = {
        "placement": placement,
        "seed": seed,
        "lr": lr,
        "phase": phase,
        "fingerprint": fp,
        "modes": {r["component"]: r["mode"] for r in module.placement_table()},
        "trainable_params": {r["component"]: int(r["trainable"]) for r in module.placement_table()},
        "steps": steps,
        "epochs": epochs,
        "accuracy": accuracy,
        "fit_seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
    }
    if phase != "sweep":
        measure = section.get("measure") or {}
        text, probe = measure.get("text_task") or {}, measure.get("probe") or {}
        record["accuracy"]["train"] = answer_accuracy(module, data.train_eval_dataloader())
        record["text_task"] = text_task_accuracy(module, int(text.get("samples", 400)), int(text.get("seed", 23)))
        record["probe"] = probe_accuracy(
            module,
            int(probe.get("train_images", 600)),
            int(probe.get("test_images", 600)),
            int(probe.get("seed", 40)),
            float(probe.get("ridge", 10.0)),
        )
    record["eval_cpu_seconds"] = round(time.process_time() - eval_start, 2)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(json.dumps(record, indent=2) + "\n")
    return record
