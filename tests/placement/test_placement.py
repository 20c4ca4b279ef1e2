"""Placements per component: exactly the expected parameters train, gradients after one step, LoRA scoping, YAML."""

from __future__ import annotations

import re
import sys

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from peft.tuners.lora import LoraLayer

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import ComponentPlacement
from lightning_mm.cli import MultimodalCLI
from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.placement import Placement, format_placement_table

FROZEN = Placement("frozen")
FULL = Placement("full")
LORA = Placement("lora", r=4, alpha=8.0)

# The seed's placements: every subset of {vision LoRA, projector, LLM LoRA} trained, the rest frozen, plus the
# default (no callback: all full) and full-mode variants.
PLACEMENTS = {
    "P": {"vision": FROZEN, "projector": FULL, "llm": FROZEN},
    "V": {"vision": LORA, "projector": FROZEN, "llm": FROZEN},
    "L": {"vision": FROZEN, "projector": FROZEN, "llm": LORA},
    "VP": {"vision": LORA, "projector": FULL, "llm": FROZEN},
    "VL": {"vision": LORA, "projector": FROZEN, "llm": LORA},
    "PL": {"vision": FROZEN, "projector": FULL, "llm": LORA},
    "VPL": {"vision": LORA, "projector": FULL, "llm": LORA},
    "default-all-full": {},
    "Vfull-L": {"vision": FULL, "projector": FROZEN, "llm": LORA},
    "Plora-Lfull": {"vision": FROZEN, "projector": Placement("lora", r=2), "llm": FULL},
}
SEED_PLACEMENTS = ["P", "V", "L", "VP", "VL", "PL", "VPL", "default-all-full"]

# What the tiny model must look like, written out independently of the implementation: a 3-block ViT read at block
# 1 (block 2 and the final norm never run), an MLP projector (Linear 0 and 2), a 2-layer Llama.
UNUSED = re.compile(r"^network\.vision\.model\.(blocks\.2\.|norm\.)")
LORA_LAYERS = {
    "vision": re.compile(r"^network\.vision\.model\.blocks\.[01]\.(attn\.(qkv|proj)|mlp\.fc[12])$"),
    "projector": re.compile(r"^network\.projector\.[02]$"),
    "llm": re.compile(r"^network\.llm\.model\.layers\.[01]\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$"),
}
N_LORA_LAYERS = {"vision": 8, "projector": 2, "llm": 14}


def expected_trainable(name: str, placements: dict) -> bool:
    component = name.split(".")[1]
    mode = placements.get(component, FULL).mode
    if mode == "frozen" or UNUSED.match(name):
        return False
    if mode == "full":
        return True
    m = re.fullmatch(r"(.*)\.lora_[AB]\.default\.weight", name)
    return bool(m and LORA_LAYERS[component].match(m.group(1)))


def check_trainable(module: MultimodalModule, placements: dict) -> None:
    names = dict(module.named_parameters())
    wrong = [n for n, p in names.items() if p.requires_grad != expected_trainable(n, placements)]
    assert not wrong, f"unexpected trainability: {wrong[:5]}"
    for component, placement in placements.items():
        lora_a = [n for n in names if n.startswith(f"network.{component}.") and ".lora_A." in n]
        assert len(lora_a) == (N_LORA_LAYERS[component] if placement.mode == "lora" else 0)


def check_gradients(named_params, allow_zero=("lora_A",)) -> None:
    for name, p in named_params:
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} has a gradient"
            continue
        assert p.grad is not None, f"trainable {name} has no gradient"
        assert torch.isfinite(p.grad).all(), name
        if not any(k in name for k in allow_zero):  # lora_A's gradient is 0 while lora_B is still at its zero init
            assert p.grad.abs().sum() > 0, f"trainable {name} has an all-zero gradient"


@pytest.mark.parametrize("name", list(PLACEMENTS))
def test_exactly_the_expected_parameters_train(name, build_module):
    module = build_module(PLACEMENTS[name])
    check_trainable(module, PLACEMENTS[name])
    rows = {r["component"]: r for r in module.placement_table()}
    for component, row in rows.items():
        own = {n: p for n, p in module.named_parameters() if n.startswith(f"network.{component}.")}
        assert row["trainable"] == sum(p.numel() for n, p in own.items() if expected_trainable(n, PLACEMENTS[name]))
        assert row["mode"].split()[0] == PLACEMENTS[name].get(component, FULL).mode


@pytest.mark.parametrize("ac", [False, True], ids=["ac-off", "ac-on"])
@pytest.mark.parametrize("name", list(PLACEMENTS))
def test_one_step_gives_gradients_to_exactly_the_trainable(name, ac, build_module, vqa_batch):
    module = build_module(PLACEMENTS[name], activation_checkpointing=ac)
    calls = {"vision": 0, "llm": 0}

    def counter(key):
        def hook(*_):
            calls[key] += 1

        return hook

    module.network.vision.model.blocks[0].mlp.register_forward_pre_hook(counter("vision"))
    module.network.llm.model.layers[0].mlp.register_forward_pre_hook(counter("llm"))
    module.train()
    loss_sum, n_items = module.compute_loss(module(vqa_batch), vqa_batch["labels"])
    (loss_sum / n_items).backward()
    check_gradients(module.named_parameters())
    vision_trains = any(p.requires_grad for p in module.network.vision.parameters())
    # checkpointed layers run again in backward (pre-hooks: the recompute stops once it has what backward needs); a
    # tower with nothing to train runs once, under no_grad
    assert calls["llm"] == (2 if ac else 1)
    assert calls["vision"] == (2 if ac and vision_trains else 1)


def test_frozen_tower_runs_under_no_grad_only_when_nothing_in_it_trains(build_module, vqa_batch):
    seen = []
    for placements in ({"vision": FROZEN, "llm": LORA}, {"vision": LORA, "llm": FROZEN}):
        module = build_module(placements).train()
        module.network.vision.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
        module(vqa_batch)
    assert seen == [False, True]


PHI = {  # a decoder whose MLP is fc1/fc2 like the timm tower's
    "model_type": "phi",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


def _lora_paths(module: torch.nn.Module) -> list[str]:
    return sorted(n for n, m in module.named_modules() if isinstance(m, LoraLayer))


@pytest.mark.parametrize("targets", [None, ["fc1", "fc2", "q_proj"]], ids=["default", "named"])
def test_llm_lora_adds_nothing_to_a_vision_tower_with_the_same_names(targets, build_module):
    overrides = {"llm_config": PHI}
    fresh = build_module(model_overrides=overrides)
    vision_names = {n for n, _ in fresh.network.vision.named_parameters()}
    assert any(n.endswith("mlp.fc1.weight") for n in vision_names)  # the collision is real
    module = build_module({"llm": Placement("lora", target_modules=targets)}, model_overrides=overrides)
    assert {n for n, _ in module.network.vision.named_parameters()} == vision_names
    assert _lora_paths(module.network.vision) == []
    llm_lora = _lora_paths(module.network.llm)
    wanted = ("fc1", "fc2", "q_proj") if targets else ("fc1", "fc2", "q_proj", "k_proj", "v_proj", "dense")
    expected = [n for n, m in module.network.llm.named_modules() if n.rsplit(".", 1)[-1] in wanted and "layers." in n]
    assert llm_lora == sorted(expected) and len(llm_lora) == 2 * len(wanted)
    trainable = {n for n, p in module.network.vision.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in fresh.network.vision.named_parameters() if p.requires_grad}  # untouched


def test_vision_lora_adds_nothing_to_an_llm_with_the_same_names(build_module):
    module = build_module(
        {"vision": Placement("lora", target_modules=["fc1", "fc2"])}, model_overrides={"llm_config": PHI}
    )
    assert _lora_paths(module.network.llm) == []
    assert _lora_paths(module.network.vision) == [f"model.blocks.{i}.mlp.fc{j}" for i in (0, 1) for j in (1, 2)]


def test_names_select_linear_layers_and_regexes_any_layer(build_module):
    module = build_module({"vision": LORA, "llm": LORA})
    assert "model.patch_embed.proj" not in _lora_paths(module.network.vision)  # a Conv2d named like attn.proj
    assert "lm_head" not in _lora_paths(module.network.llm)
    named = build_module({"vision": Placement("lora", target_modules=["proj"])})
    assert _lora_paths(named.network.vision) == ["model.blocks.0.attn.proj", "model.blocks.1.attn.proj"]
    regex = build_module({"vision": Placement("lora", target_modules=[r"re:model\.patch_embed\.proj"])})
    assert _lora_paths(regex.network.vision) == ["model.patch_embed.proj"]


def test_target_forms_and_unused_blocks(build_module):
    module = build_module({"vision": Placement("lora", target_modules=[r"re:model\.blocks\.\d\.attn\.qkv"])})
    assert _lora_paths(module.network.vision) == ["model.blocks.0.attn.qkv", "model.blocks.1.attn.qkv"]  # not 2
    with pytest.raises(ValueError, match="No layer of the vision matches"):
        build_module({"vision": Placement("lora", target_modules=["blocks.2.attn.qkv"])})  # never runs
    full = build_module({"vision": FULL})
    unused = set(full.network.vision.unused_parameter_names())
    assert unused and all(not p.requires_grad for n, p in full.network.vision.named_parameters() if n in unused)


def test_reapplying_is_idempotent_and_conflicts_raise(build_module):
    module = build_module({"llm": LORA})
    params = dict(module.named_parameters())
    module.apply_placements()
    module.set_placement("llm", Placement("lora", r=4, alpha=8.0, lr=1e-4, dropout=0.1))  # lr / dropout: same weights
    assert dict(module.named_parameters()).keys() == params.keys()
    assert all(a is b for a, b in zip(dict(module.named_parameters()).values(), params.values(), strict=True))
    with pytest.raises(ValueError, match="differ from the declared placement"):
        module.set_placement("llm", Placement("lora", r=8))
    with pytest.raises(ValueError, match="cannot become 'full'"):
        module.set_placement("llm", FULL)
    assert module.placements["llm"].lr == 1e-4  # a refused placement leaves the last good one


def test_a_frozen_component_can_gain_lora_after_the_build(build_module):
    module = build_module({"vision": FROZEN, "projector": FULL, "llm": FROZEN})  # LLaVA stage 1
    module.set_placement("llm", LORA)  # stage 2
    check_trainable(module, {"vision": FROZEN, "projector": FULL, "llm": LORA})


def test_param_groups_carry_the_component_learning_rates(build_module):
    placements = {"vision": Placement("lora", lr=1e-4), "projector": Placement("full", lr=2e-3), "llm": LORA}
    module = build_module(placements)
    groups = module.param_groups()
    lrs = {g["name"]: g.get("lr") for g in groups}
    assert lrs == {"vision": 1e-4, "projector": 2e-3, "projector/no_decay": 2e-3, "llm": None}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters() if p.requires_grad)


def test_everything_frozen_is_refused(build_module):
    module = build_module({"vision": FROZEN, "projector": FROZEN, "llm": FROZEN})
    with pytest.raises(RuntimeError, match="No trainable parameters"):
        module.param_groups()


def test_placement_validation_and_round_trip():
    with pytest.raises(ValueError, match="Unknown placement mode"):
        Placement("half")
    with pytest.raises(ValueError, match="rank"):
        Placement("lora", r=0)
    with pytest.raises(ValueError, match="Unknown component"):
        ComponentPlacement("audio", "lora")
    p = Placement("lora", r=2, alpha=4.0, target_modules=["qkv"], lr=1e-3)
    assert Placement.from_dict(p.to_dict()) == p and p.target_modules == ("qkv",)


def test_table_text_and_markdown():
    rows = [
        {"component": "vision", "mode": "lora r=4 a=8", "trainable": 8192, "total": 171776, "unused": 50112},
        {"component": "llm", "mode": "frozen", "trainable": 0, "total": 1000, "unused": 0},
    ]
    text = format_placement_table(rows)
    assert text.splitlines()[0].split() == ["component", "mode", "trainable", "params", "total", "params"]
    assert "8,192" in text and "172,776" in text and "50,112 parameters after the feature layer" in text
    assert format_placement_table(rows, markdown=True).startswith("| component | mode |")


# ---------------------------------------------------------------------------------------------- from YAML recipes
_CALLBACK = {"frozen": "FreezeComponent", "full": "FullComponent", "lora": "LoRAComponent"}


def _recipe(placements: dict, activation_checkpointing: bool, root) -> dict:
    callbacks = []
    for component, p in placements.items():
        args = {"component": component}
        if p.mode == "lora":
            args.update(r=p.r, alpha=p.alpha, dropout=p.dropout)
        callbacks.append({"class_path": f"lightning_mm.callbacks.{_CALLBACK[p.mode]}", "init_args": args})
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 1,
            "limit_val_batches": 0,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(root),
            "callbacks": callbacks,
        },
        "model": {
            "class_path": "lightning_mm.MultimodalModule",
            "init_args": {"model": "tiny", "activation_checkpointing": activation_checkpointing},
        },
        "data": {
            "class_path": "lightning_mm.data.SyntheticVQADataModule",
            "init_args": {"train_samples": 8, "val_samples": 8, "batch_size": 4},
        },
    }


class GradCheck(Callback):
    """Checks the gradients of the first optimiser step of a Trainer run."""

    def __init__(self) -> None:
        self.checked = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        check_gradients(pl_module.named_parameters())
        self.checked += 1


def make_cli(config_path, monkeypatch) -> MultimodalCLI:
    monkeypatch.setattr(sys, "argv", ["lightning-mm"])
    return MultimodalCLI(
        MultimodalModule,
        VLMDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(config_path)],
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
    )


@pytest.mark.parametrize("name", SEED_PLACEMENTS)
def test_every_seed_placement_trains_from_yaml(name, tmp_path, monkeypatch):
    ac = SEED_PLACEMENTS.index(name) % 2 == 1  # both Trainer paths, alternately
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(_recipe(PLACEMENTS[name], ac, tmp_path)))
    cli = make_cli(config, monkeypatch)
    assert sum(isinstance(cb, ComponentPlacement) for cb in cli.trainer.callbacks) == len(PLACEMENTS[name])
    grad_check = GradCheck()
    cli.trainer.callbacks.append(grad_check)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert grad_check.checked == 1 and cli.trainer.global_step == 1
    check_trainable(cli.model, PLACEMENTS[name])
