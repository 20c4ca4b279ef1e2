"""Non-causal attention patterns under FSDP2 (2 CPU processes, gloo): Gemma 3's bidirectional image blocks and
PaliGemma's prefix LM train as in one process.

``tiny-gemma3`` and ``tiny-paligemma``, placed (LLM LoRA, full projector, frozen tower), float64, activation
checkpointing: two SGD steps on 4 synthetic samples, 2 per rank, against the 4 in one batch in one process. The
per-step global losses and every trainable parameter's gradient must match.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.distributed.conftest import import_script, run_script

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # one 2-process launch of two models: > 10 s

WORKER = Path(__file__).with_name("attention_worker.py")


@pytest.fixture(scope="module")
def attention_worker():
    return import_script(WORKER, "lightning_mm_attention_worker")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("attention") / "runs.pt"
    run_script(WORKER, str(out), timeout=240)
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
