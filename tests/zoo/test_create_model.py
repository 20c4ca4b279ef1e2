"""create_model: zoo name -> ready MultimodalModule, offline on the meta device."""

from __future__ import annotations

import pytest
import torch

import lightning_mm
from lightning_mm import MultimodalModule, create_model, list_models
from lightning_mm.zoo import parameter_counts


@pytest.mark.parametrize("name", list_models())
def test_every_entry_creates_on_meta_without_its_tokenizer(name):
    module = create_model(name, device="meta")
    assert isinstance(module, MultimodalModule)
    assert module._tokenizer is None or module.spec.needs_tokenizer
    params = list(module.network.parameters())
    assert all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) == parameter_counts(name)["total"]


def test_overrides_go_to_the_spec_or_the_module():
    module = create_model("tiny", projector="linear", llm_config={"num_hidden_layers": 1}, warmup_ratio=0.1)
    assert module.spec.projector == "linear" and len(module.network.projector) == 1
    assert module.network.llm.config.num_hidden_layers == 1
    assert module.spec.llm_config["hidden_size"] == 128  # dict fields are merged, not replaced
    assert module.warmup_ratio == 0.1
    assert module.hparams.model_overrides["projector"] == "linear"  # a checkpoint rebuilds the same model


def test_module_class_and_device():
    class MyModule(MultimodalModule):
        pass

    module = create_model("tiny", module_class=MyModule, device="cpu")
    assert type(module) is MyModule
    assert next(module.network.parameters()).device == torch.device("cpu")


def test_errors():
    with pytest.raises(ValueError, match="Unknown model 'llava-9b'"):
        create_model("llava-9b")
    with pytest.raises(ValueError, match="meta device"):
        create_model("tiny", pretrained=True, device="meta")
    with pytest.raises(TypeError):
        create_model("tiny", not_an_argument=1)


def test_public_api():
    assert {"create_model", "list_models"} <= set(lightning_mm.__all__)
    assert lightning_mm.list_models("tiny*")[0] == "tiny"
