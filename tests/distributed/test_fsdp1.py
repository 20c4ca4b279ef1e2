"""FSDP1 is retired in favour of FSDP2: a recipe or a script that asks for it fails at once, naming the replacement.

(FSDP2's own runs, resume from sharded and whole-file checkpoints included, are tests/distributed/test_fsdp2.py.)
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy, Strategy

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import Placement
from lightning_mm.cli import main
from lightning_mm.distributed import VLMFSDPStrategy, check_strategy, shard_units
from lightning_mm.errors import ConfigError

UNITS = [
    "vision.model.blocks.0",
    "vision.model.blocks.1",
    "vision.model.blocks.2",
    "projector",
    "llm.model.layers.0",
    "llm.model.layers.1",
]


def test_units_are_every_vision_block_the_projector_and_every_decoder_layer():
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    module.set_placement("llm", Placement("lora", r=2))
    module.configure_model()
    assert list(shard_units(module.network)) == UNITS


def test_the_fsdp1_strategy_names_its_replacement():
    with pytest.raises(ConfigError, match=r"FSDP1 .* no longer supported.*VLMModelParallelStrategy"):
        VLMFSDPStrategy(state_dict_type="full")


def test_a_yaml_config_naming_it_fails_with_the_replacement():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Strategy, "strategy")
    config = {"strategy": {"class_path": "lightning_mm.distributed.VLMFSDPStrategy"}}
    with pytest.raises(Exception) as info:
        parser.instantiate_classes(parser.parse_object(config))
    assert "VLMModelParallelStrategy" in str(info.value)


def test_the_cli_names_the_replacement():
    argv = ["fit", "--model.model", "tiny", "--data", "lightning_mm.data.SyntheticVQADataModule"]
    strategy = '{"class_path": "lightning_mm.distributed.VLMFSDPStrategy"}'
    with pytest.raises(ValueError, match=r"FSDP1 .* no longer supported.*VLMModelParallelStrategy"):
        main([*argv, "--trainer.strategy", strategy])


def test_lightnings_fsdp1_strategy_is_refused_before_wrapping():
    module = MultimodalModule(model="tiny")
    module.configure_model()
    with pytest.raises(ValueError, match="FSDP1 .* no longer supported.*VLMModelParallelStrategy"):
        check_strategy(module, SimpleNamespace(strategy=FSDPStrategy(), precision="32-true", callbacks=[]))
