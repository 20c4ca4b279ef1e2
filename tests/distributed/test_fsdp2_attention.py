"""Non-causal attention patterns under FSDP2 (2 CPU processes, gloo): Gemma 3's bidirectional image blocks and
PaliGemma's prefix LM train as in one process.

``tiny-gemma3`` and ``tiny-paligemma``, placed (LLM LoRA, full projector, frozen tower), float64, activation
checkpointing: two SGD steps on 4 synthetic samples, 2 per rank, against the 4 in one batch in one process. The
per-step global losses and every trainable parameter's gradient must match.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # one 2-process launch of two models: > 10 s

WORKER = Path(__file__).with_name("attention_worker.py")
ROOT = Path(__file__).parents[2]
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "PL_GLOBAL_SEED")


def _launch(out: Path, timeout: float = 240) -> None:
    """Run the attention worker on 2 processes; kill the whole process group if it hangs."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, str(WORKER), str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the attention worker did not finish in {timeout:.0f} s (hung):\n{stderr[-6000:]}")
    assert proc.returncode == 0, f"the attention worker failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"


@pytest.fixture(scope="module")
def attention_worker():
    spec = importlib.util.spec_from_file_location("lightning_mm_attention_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(WORKER.parent))  # the worker imports the shared helpers of worker.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(WORKER.parent))
    return module


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("attention") / "runs.pt"
    _launch(out)
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize(("name", "pattern"), [("tiny-gemma3", "image_blocks"), ("tiny-paligemma", "prefix_lm")])
def test_fsdp2_losses_and_gradients_equal_one_process(name, pattern, two_process_runs, attention_worker, tmp_path):
    ours = two_process_runs[name]
    reference = attention_worker.attention_run(tmp_path, name)
    assert ours["pattern"] == reference["pattern"] == pattern
    prefix = [("prefix_mask" in keys) for keys in ours["keys"] + reference["keys"]]
    assert all(prefix) if pattern == "prefix_lm" else not any(prefix)  # the collator wrote the prefix on every rank
    torch.testing.assert_close(torch.tensor(ours["losses"]), torch.tensor(reference["losses"]), rtol=1e-10, atol=0)
    assert len(ours["grads"]) == len(reference["grads"]) == 2
    for step, (grads, expected) in enumerate(zip(ours["grads"], reference["grads"], strict=True)):
        assert grads.keys() == expected.keys()
        assert any(".lora_A." in n for n in grads) and any(".projector." in n for n in grads)
        for key, value in expected.items():
            scale = value.abs().max().clamp(min=1e-12)
            assert float((grads[key] - value).abs().max() / scale) < 1e-6, f"step {step + 1}: {key}"
