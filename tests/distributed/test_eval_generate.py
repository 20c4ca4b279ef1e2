"""eval_generate on 2 processes (DDP, FSDP2): the logged generated-answer metrics cover the samples of both ranks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lightning_mm import MultimodalModule
from lightning_mm.metrics import normalized_levenshtein_similarity

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("eval_generate_worker.py")
ROOT = Path(__file__).parents[2]
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "PL_GLOBAL_SEED")


def _expected() -> dict[str, float]:
    """Values when every generated answer is ``red``, from the held-out answers alone."""
    spec = importlib.util.spec_from_file_location("lightning_mm_eval_generate_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    module = MultimodalModule(model="tiny")
    dm = worker.data()
    dm.bind(module.data_contract)
    samples = [dm.val_dataloader().dataset[i] for i in range(worker.VAL_SAMPLES)]
    out: dict[str, float] = {}
    for category in [None, *sorted({s["category"] for s in samples})]:
        group = [s for s in samples if category is None or s["category"] == category]
        suffix = "" if category is None else f"/{category}"
        out[f"val/gen/exact_match{suffix}"] = sum(s["answer"] == "red" for s in group) / len(group)
        out[f"val/gen/anls{suffix}"] = sum(normalized_levenshtein_similarity("red", s["answer"]) for s in group) / len(
            group
        )
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_generated_answer_metrics_cover_both_ranks(strategy, tmp_path):
    out = tmp_path / "metrics.json"
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(WORKER), strategy, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    logged = json.loads(out.read_text())
    expected = _expected()
    assert 0 < expected["val/gen/exact_match"] < 1
    assert Counter(k.split("/")[2] for k in expected) == Counter(
        k.split("/")[2] for k in logged if k.startswith("val/gen")
    )
    assert {k: logged[k] for k in expected} == pytest.approx(expected)
    assert logged["val/answer_accuracy"] == 0.0  # teacher forcing: "red" never ends the answer
