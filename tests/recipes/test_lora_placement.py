"""The LoRA-placement experiment (recipes/lora_placement): config, the held-out task, the measures, the statistics,
the analysis, and the ``--quick`` run of the whole pipeline.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "recipes"))

from lora_placement import analysis, report, stages, stats  # noqa: E402
from lora_placement import config as lp_config  # noqa: E402
from lora_placement.measure import answer_accuracy, ridge_probe  # noqa: E402
from lora_placement.run import main  # noqa: E402
from lora_placement.task import HeldOutVQADataModule, combination_split  # noqa: E402

from lightning_mm.data.synthetic import COLORS, SHAPES, caption  # noqa: E402


# ---------------------------------------------------------------- placements and config
def test_placements_parse_in_canonical_order_and_reject_junk():
    assert lp_config.parse_placement("L+V") == ("V", "L")
    assert lp_config.parse_placement("none") == ()
    assert lp_config.placement_label(("L", "P", "V")) == "V+P+L"
    for bad in ("V+V", "X", "V+"):
        with pytest.raises(ValueError):
            lp_config.parse_placement(bad)


def test_experiment_config_declares_runs_and_contrasts():
    cfg = lp_config.load_config()
    labels = [lp_config.placement_label(lp_config.parse_placement(p)) for p in cfg["stage2"]["placements"]]
    subsets = {
        lp_config.placement_label(c) for k in (1, 2, 3) for c in itertools.combinations(lp_config.COMPONENT_LETTERS, k)
    }
    assert len(labels) == 8 and set(labels) == subsets | {"none"}
    assert len(cfg["stage2"]["seeds"]) >= 5 and cfg["stage2"]["sweep_seed"] not in cfg["stage2"]["seeds"]
    lrs = cfg["stage2"]["lrs"]
    assert len(lrs) == 4 and all(b / a > 2 for a, b in itertools.pairwise(lrs))  # a log grid
    declared = cfg["analysis"]["contrasts"]
    assert {c["part"] for c in declared} == {1, 2, 3}
    assert all(c["a"] in labels and c["b"] in labels and c["claim"] in ("gain", "no_gain") for c in declared)
    assert cfg["analysis"]["endpoint"] == "test_unseen" and 0 < cfg["analysis"]["margin"] <= 0.05


def test_experiment_config_describes_itself():
    header = []
    for line in lp_config.DEFAULT_CONFIG.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert all(field in text for field in ("Purpose:", "Download:", "Command:"))
    assert "python recipes/lora_placement/run.py" in text


def test_overrides_parse_yaml_values_and_create_missing_keys():
    cfg = lp_config.apply_overrides({"a": {"b": 1}}, ["a.b=[0, 1]", "c.d=null", "a.e=2.5e-3"])
    assert cfg == {"a": {"b": [0, 1], "e": 2.5e-3}, "c": {"d": None}}
    with pytest.raises(ValueError):
        lp_config.apply_overrides({}, ["novalue"])


def test_placement_callbacks_freeze_every_component_not_in_the_placement():
    components = lp_config.load_config()["stage2"]["components"]
    callbacks = stages.placement_callbacks(components, "V+L")
    modes = {cb.component: cb.placement.mode for cb in callbacks}
    assert modes == {"vision": "lora", "llm": "lora", "projector": "frozen"}
    assert {cb.placement.mode for cb in stages.placement_callbacks(components, "none")} == {"frozen"}


# ---------------------------------------------------------------- the held-out task
def test_latin_square_split_holds_out_combinations_of_trained_colours_and_shapes():
    train, val, test = (set(combination_split(s)) for s in ("train", "val_unseen", "test_unseen"))
    assert len(train) == 16 and len(val) == 4 and len(test) == 4
    assert train | val | test == set(itertools.product(COLORS, SHAPES)) and not (
        train & val or train & test or val & test
    )
    for held_out in (val, test):
        assert sorted(s for _, s in held_out) == sorted(SHAPES)  # each shape once
        for color, shape in held_out:  # both parts trained on, never together
            assert sum(c == color for c, _ in train) >= 2 and sum(s == shape for _, s in train) == 4
    with pytest.raises(ValueError, match="Unknown combination split"):
        combination_split("test")


def _task(module, **kw):
    dm = HeldOutVQADataModule(**{"train_images": 24, "val_samples": 40, "test_samples": 40, "batch_size": 8, **kw})
    return dm.bind(module.data_contract)


def test_splits_draw_only_their_combinations_and_describe_answers_the_caption(tiny_module):
    dm = _task(tiny_module)
    tok = tiny_module.tokenizer
    train_ds = dm.train_dataloader().dataset
    for split, combos in (("train", "train"), ("val_unseen", "val_unseen"), ("test_unseen", "test_unseen")):
        ds = train_ds if split == "train" else dm.eval_dataloader(split).dataset
        assert {(ds.scene(i)["color"], ds.scene(i)["shape"]) for i in range(len(ds))} <= set(combination_split(combos))
    described = 0
    for i in range(len(train_ds)):
        scene, sample = train_ds.scene(i), train_ds[i]
        assert len(scene["questions"]) == 2 and len({q for q, _ in scene["questions"]}) == 2
        supervised = tok.convert_ids_to_tokens(sample["labels"][sample["labels"] != -100].tolist())
        expected = []
        for qtype, _ in scene["questions"]:
            answer = caption(scene["color"], scene["shape"], scene["position"]) if qtype == "describe" else scene[qtype]
            expected += [*answer.split(), "<|im_end|>"]
            described += qtype == "describe"
        assert supervised == expected
    assert described > 0


def test_training_draw_depends_on_the_seed_and_evaluation_splits_do_not(tiny_module):
    a, b = _task(tiny_module, draw_seed=0), _task(tiny_module, draw_seed=1)
    scenes = [[dm.train_dataloader().dataset.scene(i) for i in range(24)] for dm in (a, b)]
    assert scenes[0] != scenes[1]
    for split in ("val_seen", "val_unseen", "test_seen", "test_unseen"):
        xa, xb = a.eval_dataloader(split).dataset[3], b.eval_dataloader(split).dataset[3]
        assert torch.equal(xa["pixel_values"], xb["pixel_values"]) and torch.equal(xa["input_ids"], xb["input_ids"])
    seen = a.eval_dataloader("test_seen").dataset
    assert seen.seed != a.eval_dataloader("val_seen").dataset.seed != a.train_dataloader().dataset.seed
    with pytest.raises(ValueError, match="Unknown evaluation split"):
        a.eval_dataloader("unseen")


def test_answer_accuracy_counts_per_category(tiny_module):
    dm = _task(tiny_module)
    acc = answer_accuracy(tiny_module, dm.eval_dataloader("val_seen"))
    assert set(acc) == {"all", "color", "shape", "position", "describe"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    tiny_module.network.lm_head.weight.data.zero_()  # every prediction is token 0: no answer can be right
    assert answer_accuracy(tiny_module, dm.eval_dataloader("val_seen"))["all"] == 0.0


def test_ridge_probe_separates_separable_classes_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    centres = torch.randn(4, 10, generator=g, dtype=torch.float64) * 5
    x = centres[labels] + torch.randn(400, 10, generator=g, dtype=torch.float64)
    assert ridge_probe(x[:200], labels[:200], x[200:], labels[200:], 4, ridge=1.0) > 0.95
    noise = torch.randn(400, 10, generator=g, dtype=torch.float64)
    assert ridge_probe(noise[:200], labels[:200], noise[200:], labels[200:], 4, ridge=1.0) < 0.45


# ---------------------------------------------------------------- statistics
def test_t_distribution_matches_tables():
    for p, df, expected in (
        (0.975, 4, 2.776445105),
        (0.95, 4, 2.131846786),
        (0.975, 1, 12.70620474),
        (0.975, 30, 2.042272456),
        (0.995, 9, 3.249835542),
    ):
        assert stats.t_quantile(p, df) == pytest.approx(expected, abs=1e-7)
    assert stats.t_cdf(0.0, 7) == pytest.approx(0.5) and stats.t_cdf(1.5, 3) == pytest.approx(0.8847080673775, abs=1e-9)


def test_paired_test_mean_ci_and_holm_by_hand():
    a, b = [0.80, 0.82, 0.85, 0.79, 0.84], [0.78, 0.80, 0.80, 0.78, 0.80]
    d = [x - y for x, y in zip(a, b, strict=True)]  # 0.02 0.02 0.05 0.01 0.04
    mean, sd = sum(d) / 5, math.sqrt(sum((x - 0.028) ** 2 for x in d) / 4)
    t = mean / (sd / math.sqrt(5))
    res = stats.paired_test(a, b)
    assert res["mean"] == pytest.approx(0.028) and res["t"] == pytest.approx(t)
    assert res["p"] == pytest.approx(2 * (1 - stats.t_cdf(t, 4)))
    assert res["low"] == pytest.approx(mean - 2.776445105 * sd / math.sqrt(5), abs=1e-9)
    m, lo, hi = stats.mean_ci(a)
    assert lo < m < hi and m == pytest.approx(0.82)
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    with pytest.raises(ValueError):
        stats.paired_test([1.0], [1.0])


def test_tost_equivalence_needs_a_tight_interval_inside_the_margin():
    base = [0.80, 0.82, 0.85, 0.79, 0.84]
    close = [x + e for x, e in zip(base, (0.001, -0.002, 0.001, 0.0, -0.001), strict=True)]
    far = [x + 0.05 for x in base]
    noisy = [x + e for x, e in zip(base, (0.04, -0.05, 0.03, -0.04, 0.02), strict=True)]
    assert stats.tost(close, base, 0.02)["p"] < 0.01
    assert stats.tost(far, base, 0.02)["p"] > 0.5
    assert stats.tost(noisy, base, 0.02)["p"] > 0.05  # mean near 0 but too uncertain to call equivalent


def _t_cdf_closed_form(t, df):
    """Student's t CDF in closed form for df 1, 2 and 4, written with its tail so that it stays exact far out."""
    if df == 1:
        tail = math.atan2(1.0, abs(t)) / math.pi
    elif df == 2:
        r = math.sqrt(2.0 + t * t)
        tail = 1.0 / (r * (r + abs(t)))
    else:  # df 4: P(T > |t|) = (1 - u)^2 (2 + u) / 4 with u = |t| / sqrt(4 + t^2)
        r = math.sqrt(4.0 + t * t)
        u, one_minus_u = abs(t) / r, 4.0 / (r * (r + abs(t)))
        tail = one_minus_u**2 * (2.0 + u) / 4.0
    return 1.0 - tail if t > 0 else tail


def test_t_distribution_matches_closed_forms_near_zero_and_far_in_the_tail():
    assert 2 * (1 - stats.t_cdf(3.0, 4)) == pytest.approx(0.0399419681, abs=1e-9)  # two-sided p, t = 3, df = 4
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.7764451052, abs=1e-9)
    assert stats.t_quantile(0.975, 9) == pytest.approx(2.2621571628, abs=1e-9)
    for df in (1, 2, 4):
        for t in (1e-8, 1e-3, 0.5, 3.0, 40.0, 1e4, 1e8):
            for sign in (1.0, -1.0):
                assert stats.t_cdf(sign * t, df) == pytest.approx(_t_cdf_closed_form(sign * t, df), rel=1e-9, abs=1e-15)
            assert stats.t_cdf(-t, df) == pytest.approx(_t_cdf_closed_form(-t, df), rel=1e-9)  # the tail, relatively
    assert abs(stats.t_quantile(0.5, 4)) < 1e-12
    assert stats.t_quantile(1e-5, 1) == pytest.approx(-1.0 / math.tan(math.pi * 1e-5), rel=1e-9)  # beyond |t| = 1e4


def test_paired_test_by_hand_and_far_in_the_tail():
    # differences 1 2 2 3 3: mean 2.2, sd sqrt(0.7), se sqrt(0.7 / 5), t = 5.8797, df 4
    res = stats.paired_test([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 1.0, 1.0, 2.0])
    se = math.sqrt(0.7 / 5)
    assert res["t"] == pytest.approx(2.2 / se) and res["sd"] == pytest.approx(math.sqrt(0.7))
    assert res["p"] == pytest.approx(2 * _t_cdf_closed_form(-2.2 / se, 4), rel=1e-9)
    assert res["p"] == pytest.approx(0.0041810721, abs=1e-9)
    assert (res["low"], res["high"]) == pytest.approx((2.2 - 2.7764451052 * se, 2.2 + 2.7764451052 * se), abs=1e-9)
    # a very strong effect: the p value is tiny but not 0 (2 (1 - cdf) would round it to 0)
    strong = stats.paired_test([1.0, 1.0 + 1e-8, 1.0 - 1e-8], [0.0, 0.0, 0.0])
    assert 0.0 < strong["p"] == pytest.approx(2 * _t_cdf_closed_form(-strong["t"], 2), rel=1e-6)


def test_tost_by_hand_and_as_the_90_percent_interval_inside_the_margin():
    base = [0.80, 0.82, 0.85, 0.79, 0.84]
    close = [x + e for x, e in zip(base, (0.011, -0.002, 0.009, 0.0, 0.012), strict=True)]
    # differences: mean 0.006, sd 0.0065192; the binding one-sided test is H0 diff >= +0.02: t = -0.014 / se
    se = statistics.stdev([0.011, -0.002, 0.009, 0.0, 0.012]) / math.sqrt(5)
    res = stats.tost(close, base, 0.02)
    assert res["p"] == pytest.approx(_t_cdf_closed_form((0.006 - 0.02) / se, 4), rel=1e-6)
    assert res["p"] == pytest.approx(0.0043178963, abs=1e-8)
    assert (res["low90"], res["high90"]) == pytest.approx((0.006 - 2.1318467863 * se, 0.006 + 2.1318467863 * se))
    # equivalence at 5 % <=> the 90 % CI inside the margin: at margin = the CI's far end, p is exactly 0.05
    assert stats.tost(close, base, res["high90"])["p"] == pytest.approx(0.05, abs=1e-9)
    assert (
        stats.tost(close, base, res["high90"] * 1.01)["p"] < 0.05 < stats.tost(close, base, res["high90"] * 0.99)["p"]
    )


def test_holm_is_step_down_monotone_and_capped():
    # sorted 0.005 0.01 0.03 0.04 -> x4 x3 x2 x1 = 0.02 0.03 0.06 0.04 -> monotone: 0.02 0.03 0.06 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.3, 0.4]) == pytest.approx([0.6, 0.6]) and stats.holm([0.6, 0.9]) == [1.0, 1.0]
    assert stats.holm([0.02]) == [0.02] and stats.holm([]) == []


def test_contrasts_pair_runs_by_seed_not_by_position():
    a = {3: 0.70, 1: 0.62, 0: 0.66, 2: 0.71}
    b = {0: 0.60, 1: 0.55, 2: 0.68, 4: 0.50}  # seed 3 only in a, seed 4 only in b
    records = [_record("L", s, v) for s, v in a.items()] + [_record("P", s, v) for s, v in b.items()]
    spec = {"margin": 0.02, "contrasts": [{"a": "L", "b": "P", "claim": "gain", "part": 3}]}
    (c,) = analysis.evaluate_contrasts(records, spec, "test_unseen")
    assert c["seeds"] == [0, 1, 2]
    assert c["test"] == stats.paired_test([0.66, 0.62, 0.71], [0.60, 0.55, 0.68])
    assert c["p_diff"] == c["test"]["p"]  # a family of one: Holm changes nothing


def _record(placement, seed, unseen, phase="final", lr=1e-3, val=None):
    acc = {"val_seen": {"all": val or unseen}, "val_unseen": {"all": val or unseen}, "test_unseen": {"all": unseen}}
    return {"placement": placement, "seed": seed, "lr": lr, "phase": phase, "accuracy": acc}


def test_lr_choice_flags_the_edge_of_the_grid():
    records = [_record("P", 100, 0.0, "sweep", lr, val) for lr, val in ((1e-3, 0.5), (3e-3, 0.7), (1e-2, 0.6))]
    assert analysis.choose_lr(records, "P", [1e-3, 3e-3, 1e-2], ["val_seen", "val_unseen"]) == {
        "lr": 3e-3,
        "scores": {1e-3: 0.5, 3e-3: 0.7, 1e-2: 0.6},
        "edge": False,
    }
    records[0]["accuracy"]["val_seen"]["all"] = 0.9
    assert analysis.choose_lr(records, "P", [1e-3, 3e-3, 1e-2], ["val_seen", "val_unseen"])["edge"]


def test_contrasts_give_the_verdicts_the_data_supports():
    base = [0.60, 0.62, 0.65, 0.59, 0.64]
    shifts = {
        "P": [0.0] * 5,
        "L": [0.10, 0.11, 0.09, 0.10, 0.12],
        "V+L": [0.001, -0.002, 0.0, 0.001, -0.001],
        "V": [0.06, -0.07, 0.05, -0.04, 0.03],
    }
    records = [_record(p, s, b + d) for p, ds in shifts.items() for s, (b, d) in enumerate(zip(base, ds, strict=True))]
    spec = {
        "margin": 0.02,
        "contrasts": [
            {"a": "L", "b": "P", "claim": "gain", "part": 3},
            {"a": "V+L", "b": "P", "claim": "no_gain", "part": 2},
            {"a": "V", "b": "P", "claim": "gain", "part": 3},
            {"a": "V+L", "b": "P", "claim": "gain", "part": 3},
            {"a": "V+P+L", "b": "P", "claim": "no_gain", "part": 1},
        ],
    }
    out = analysis.evaluate_contrasts(records, spec, "test_unseen")
    assert [c.get("verdict") for c in out] == ["confirmed", "confirmed", "undecided", "refuted", None]
    assert out[-1]["missing"] and all(c["p_diff"] >= c["test"]["p"] for c in out[:-1])  # Holm never lowers p
    parts = analysis.claim_verdicts(out)
    assert parts[2]["verdict"] == "confirmed" and parts[3]["verdict"] == "mixed" and 1 not in parts


# ---------------------------------------------------------------- the whole pipeline in miniature
@pytest.mark.slow
def test_quick_run_trains_measures_and_reports(tmp_path):
    args = ["--quick", "--set", f"output_dir={tmp_path / 'runs'}", "--set", f"report_dir={tmp_path / 'report'}"]
    assert main(args) == 0
    result = json.loads((tmp_path / "report" / report.RESULTS_FILE).read_text())
    runs = result["runs"]
    assert result["meta"]["complete"] and {r["phase"] for r in runs} == {"baseline", "sweep", "final"}
    sweep = [r for r in runs if r["phase"] == "sweep"]
    assert sorted((r["placement"], r["lr"]) for r in sweep) == [("P", 1e-3), ("P", 3e-3), ("V+L", 1e-3), ("V+L", 3e-3)]
    final = [r for r in runs if r["phase"] == "final"]
    assert sorted((r["placement"], r["seed"]) for r in final) == [("P", 0), ("P", 1), ("V+L", 0), ("V+L", 1)]
    assert all(r["steps"] == 4 and r["lr"] == result["sweep"][r["placement"]]["lr"] for r in final)
    assert all(set(r["accuracy"]) == {"val_seen", "val_unseen", "test_seen", "test_unseen", "train"} for r in final)
    base = next(r for r in runs if r["phase"] == "baseline")
    for r in final:
        if r["placement"] == "P":  # the LLM and the tower are frozen: their measures cannot move
            assert r["text_task"] == base["text_task"] and r["probe"] == base["probe"]
            assert r["trainable_params"]["vision"] == 0 and r["trainable_params"]["llm"] == 0
        else:
            assert r["trainable_params"]["projector"] == 0 and r["trainable_params"]["llm"] > 0
    rows = {row["placement"]: row for row in result["summary"]}
    assert set(rows) == {"none", "P", "V+L"} and rows["P"]["text_unchanged"] and rows["P"]["probe_unchanged"]
    contrast = next(c for c in result["contrasts"]["test_unseen"] if (c["a"], c["b"]) == ("V+L", "P"))
    assert contrast["seeds"] == [0, 1] and "verdict" in contrast
    readme = (tmp_path / "report" / report.README_FILE).read_text()
    assert readme.count(report.BEGIN) == 1 and "| `V+L` |" in readme and "Verdict per part" in readme
    assert (tmp_path / "report" / report.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # everything is cached: a second run trains nothing and writes the same runs
    assert main([*args, "--report-only"]) == 0
    again = json.loads((tmp_path / "report" / report.RESULTS_FILE).read_text())
    assert sorted(json.dumps(r, sort_keys=True) for r in again["runs"]) == sorted(
        json.dumps(r, sort_keys=True) for r in runs
    )
