"""``benchmarks/length_distribution.py``: the documented distribution, the three batchings, and a tiny end-to-end run.

No timing is asserted (the script prints the measured ratios); these tests check what the ratios are computed on.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "length_distribution.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("length_distribution_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drawn(bench):
    args = bench.parse_args(["--tiny"])
    args.samples, args.max_length = 400, 1024
    module = bench.build_module(args)
    return args, module, bench.draw_samples(args, module)


def test_samples_follow_the_documented_mix(bench, drawn):
    args, module, samples = drawn
    shares = {g: np.mean([s["group"] == g for s in samples]) for g in bench.GROUPS}
    for group, (share, *_) in bench.GROUPS.items():
        assert abs(shares[group] - share) < 4 * (share * (1 - share) / len(samples)) ** 0.5, (group, shares[group])
    for s in samples:
        n_image = int((s["input_ids"] == module.image_token_id).sum())
        has_image = s.get("pixel_values") is not None
        assert n_image == (module.num_image_tokens if has_image else 0) and has_image == (s["group"] != "text")
        assert len(s["input_ids"]) <= args.max_length
        assert (s["labels"][s["input_ids"] == module.image_token_id] == -100).all()  # images are never targets
    text_lengths = [len(s["input_ids"]) for s in samples if s["group"] == "text"]
    vqa_text = [len(s["input_ids"]) - module.num_image_tokens for s in samples if s["group"] == "vqa"]
    assert np.median(text_lengths) > 3 * np.median(vqa_text)  # long multi-turn text-only samples


def test_the_three_batchings_hold_the_same_tokens_and_packing_pads_least(bench, drawn):
    args, module, samples = drawn
    samples = samples[:64]
    collate = bench.VLMCollator(module.tokenizer.pad_token_id, "right", module.image_token_id, module.num_image_tokens)
    epochs = {m: bench.batches(m, samples, args, collate) for m in bench.METHODS}
    useful = sum(len(s["input_ids"]) for s in samples)
    for method, epoch in epochs.items():
        assert sum(int(b["attention_mask"].sum()) for b in epoch) == useful, method
        targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in epoch)
        assert targets == sum(int((s["labels"][1:] != -100).sum()) for s in samples), method
    assert all(b["input_ids"].shape[1] <= args.max_length for b in epochs["packed"])
    assert all("position_ids" in b for b in epochs["packed"])
    padding = {m: bench.padding_fraction(e) for m, e in epochs.items()}
    assert padding["random"] > padding["grouped"] and padding["random"] > padding["packed"]


def test_a_tiny_run_reports_ratios_and_the_padding_bound(bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    result = bench.main(["--tiny", "--samples", "12", "--repeats", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "ratio packed/grouped useful tokens/s:" in printed and "padding bound:" in printed
    assert out.is_file() and set(result["useful_tokens_per_s"]) == set(bench.METHODS)
    expected = (1 - result["padding"]["packed"]) / (1 - result["padding"]["grouped"])
    assert result["padding_bound"] == pytest.approx(expected)
