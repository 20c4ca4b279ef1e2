"""The LoRA-placement experiment (recipes/lora_placement): config handling, data modes it relies on, and a smoke run.

The smoke run is the whole pipeline in miniature (stage 0, stage 1, two stage-2 placements, one seed, a few steps,
in-process); it checks what each stage hands to the next, the cache, and the report.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "recipes"))

from lora_placement import config as lp_config  # noqa: E402
from lora_placement import report, stages  # noqa: E402
from lora_placement.run import run_experiment  # noqa: E402

from lightning_mm.data import SyntheticVQADataModule  # noqa: E402
from lightning_mm.data.synthetic import SHAPES, SyntheticImageDataset, caption  # noqa: E402
from lightning_mm.zoo import parameter_counts  # noqa: E402


# ---------------------------------------------------------------- placements and config
def test_placements_parse_in_canonical_order_and_reject_junk():
    assert lp_config.parse_placement("L+V") == ("V", "L")
    assert lp_config.parse_placement("none") == ()
    assert lp_config.placement_label(("L", "P", "V")) == "V+P+L"
    for bad in ("V+V", "X", "V+"):
        with pytest.raises(ValueError):
            lp_config.parse_placement(bad)


def test_experiment_config_has_the_baseline_and_every_non_empty_subset():
    cfg = lp_config.load_config()
    labels = [lp_config.placement_label(lp_config.parse_placement(p)) for p in cfg["stage2"]["placements"]]
    subsets = {
        lp_config.placement_label(c) for k in (1, 2, 3) for c in itertools.combinations(lp_config.COMPONENT_LETTERS, k)
    }
    assert len(labels) == 8 and set(labels) == subsets | {"none"}
    assert len(cfg["stage2"]["seeds"]) == 3


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


# ---------------------------------------------------------------- data modes used by stages 0 and 1
def _dataset(module, **kw):
    dm = SyntheticVQADataModule(train_samples=8, val_samples=8, batch_size=4, **kw)
    dm.bind(module.tokenizer, module.num_image_tokens, module.image_data_config, module.image_token_id)
    return dm


def test_caption_mode_with_plain_template_supervises_the_caption_after_the_image(tiny_module):
    tok = tiny_module.tokenizer
    ds = _dataset(tiny_module, mode="caption", template="plain")._dataset(6, seed=0)
    for i in range(6):
        s, scene = ds[i], ds.scene(i)
        tokens = tok.convert_ids_to_tokens(s["input_ids"].tolist())
        n_img = tiny_module.num_image_tokens
        words = caption(scene["color"], scene["shape"], scene["position"]).split()
        assert tokens == ["<image>"] * n_img + words + ["<|im_end|>"]  # the prompt is dropped by `plain`
        assert tok.convert_ids_to_tokens(s["labels"][s["labels"] != -100].tolist()) == words + ["<|im_end|>"]
        assert s["category"] == "caption" and s["pixel_values"].shape[0] == 1


def test_text_mode_has_no_image_and_every_answer_was_stated_by_the_user(tiny_module):
    tok = tiny_module.tokenizer
    dm = _dataset(tiny_module, mode="text", train_questions_per_image=3)
    ds = dm._dataset(6, seed=0, questions_per_image=3)
    for i in range(6):
        s, scene = ds[i], ds.scene(i)
        assert "pixel_values" not in s and not bool((s["input_ids"] == tiny_module.image_token_id).any())
        tokens = tok.convert_ids_to_tokens(s["input_ids"].tolist())
        said = caption(scene["color"], scene["shape"], scene["position"]).split()
        start = tokens.index("shows") + 1
        assert tokens[start - 4 : start + 6] == ["user", "the", "image", "shows", *said]  # where an image would be
        sup = [t for t in tok.convert_ids_to_tokens(s["labels"][s["labels"] != -100].tolist()) if t != "<|im_end|>"]
        described = sup[:6] == said
        assert described == (i % 2 == 0)  # every other sample first asks for the caption
        answers = sup[6:] if described else sup
        assert len(answers) == 3 and set(answers) <= set(said)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"] is None and int(batch["image_counts"].sum()) == 0


def test_vqa_mode_is_the_default_and_unchanged(tiny_module):
    a = _dataset(tiny_module)._dataset(4, seed=0)
    b = _dataset(tiny_module, mode="vqa")._dataset(4, seed=0)
    for i in range(4):
        assert torch.equal(a[i]["input_ids"], b[i]["input_ids"]) and torch.equal(a[i]["labels"], b[i]["labels"])
    with pytest.raises(ValueError):
        SyntheticVQADataModule(mode="captions")


def test_image_dataset_labels_the_requested_attribute(tiny_module):
    cfg = tiny_module.image_data_config
    shapes = SyntheticImageDataset(cfg, 40, seed=5, target="shape")
    assert shapes.classes == SHAPES and {int(shapes[i][1]) for i in range(40)} == set(range(4))
    positions = SyntheticImageDataset(cfg, 12, seed=5, target="position")
    mean, std = np.asarray(cfg["mean"])[:, None, None], np.asarray(cfg["std"])[:, None, None]
    for i in range(12):
        image, label = positions[i]
        bright = (image.numpy() * std + mean).max(axis=0) > 0.5  # the shape, over a dark background
        ys, xs = np.nonzero(bright)
        row, col = positions.classes[label].split("-")
        assert (ys.mean() < 16) == (row == "top") and (xs.mean() < 16) == (col == "left")
    assert torch.equal(shapes[3][0], SyntheticImageDataset(cfg, 40, seed=5, target="shape")[3][0])


# ---------------------------------------------------------------- the smoke run
def _smoke_config(tmp_path: Path) -> dict:
    overrides = {
        "output_dir": str(tmp_path / "runs"),
        "report_dir": str(tmp_path / "report"),
        "workers": 1,
        "stage0": {
            "vision": {"steps": 4, "batch_size": 16, "val_samples": 32},
            "llm": {"trainer": {"max_steps": 4}, "data": {"init_args": {"batch_size": 8, "val_samples": 16}}},
        },
        "stage1": {"trainer": {"max_steps": 4}, "data": {"init_args": {"batch_size": 8, "val_samples": 16}}},
        "stage2": {
            "placements": ["P", "V+L"],
            "seeds": [0],
            "trainer": {"max_steps": 4},
            "data": {"init_args": {"batch_size": 8, "val_samples": 24}},
        },
    }
    return lp_config.load_config(overrides=overrides)


def test_smoke_two_placements_one_seed(tmp_path):
    cfg = _smoke_config(tmp_path)
    first = run_experiment(cfg, log=lambda msg: None)
    assert first["cached"] == [] and len(first["ran"]) == 5  # stage 0 (2), stage 1, two stage-2 runs

    runs = {r["placement"]: r for r in first["result"]["runs"]}
    assert set(runs) == {"P", "V+L"} and all(r["steps"] == 4 for r in runs.values())
    assert runs["P"]["trainable_params"] == {"vision": 0, "projector": parameter_counts("tiny")["projector"], "llm": 0}
    assert runs["P"]["modes"] == {"vision": "frozen", "projector": "full", "llm": "frozen"}
    vl = runs["V+L"]["trainable_params"]
    assert vl["projector"] == 0 and vl["vision"] > 0 and vl["llm"] > 0
    assert all(0.0 <= v <= 1.0 for r in runs.values() for v in r["metrics"].values())

    # each stage's output is what the next one loads: tower file, LLM directory, projector file
    out = tmp_path / "runs"
    sources = first["sources"]
    module = stages.build_stage_module(cfg, cfg["stage2"], sources, pretrained=True)
    module.configure_model()
    tower = load_file(out / "stage0_vision" / "model.safetensors")
    assert torch.equal(module.network.vision.model.blocks[0].attn.qkv.weight, tower["blocks.0.attn.qkv.weight"])
    projector = torch.load(out / "stage1" / "mm_projector.bin", weights_only=True)
    assert torch.equal(module.network.projector[0].weight, projector["model.mm_projector.0.weight"])
    llm = load_file(out / "stage0_llm" / "model.safetensors")
    key = next(k for k in llm if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert torch.equal(module.network.llm.get_submodule(key.removesuffix(".weight")).weight, llm[key])

    # the report: table rows, plot, results file
    report_dir = tmp_path / "report"
    readme = (report_dir / "README.md").read_text()
    assert report.BEGIN in readme and report.END in readme
    assert "| `P` | projector full | 24,832 |" in readme and "| `V+L` |" in readme
    assert (report_dir / report.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((report_dir / report.RESULTS_FILE).read_text())["metric_names"][-1] == "overall"

    # a stage-2 change reruns stage 2 alone; the README block is replaced, not appended
    cfg["stage2"]["trainer"]["max_steps"] = 2
    second = run_experiment(cfg, log=lambda msg: None)
    assert second["cached"] == ["stage 0 (vision)", "stage 0 (llm)", "stage 1"]
    assert sorted(second["ran"]) == ["stage 2 P seed 0", "stage 2 V+L seed 0"]
    assert all(r["steps"] == 2 for r in second["result"]["runs"])
    assert (report_dir / "README.md").read_text().count(report.BEGIN) == 1
