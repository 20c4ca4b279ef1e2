"""pretrained=True takes the real loading paths (transformers from_pretrained, timm pretrained), fed local artefacts."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import lightning
import pytest
import timm
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lightning_mm import MultimodalModule, create_model
from lightning_mm.callbacks import Placement
from lightning_mm.checkpoint.format import CHECKPOINT_KEY, make_adapter_only
from lightning_mm.zoo import ModelSpec, build_network

LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "vocab_size": 40,
}
TOWER = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    """A 40-token Llama saved in bfloat16 with save_pretrained, standing in for a hub checkpoint."""
    torch.manual_seed(0)
    config = dict(LLAMA)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
    path = tmp_path_factory.mktemp("llm")
    model.to(torch.bfloat16).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tower_file(tmp_path_factory):
    """timm weights of the tiny tower in a local file (timm's ``pretrained_cfg_overlay=dict(file=...)``)."""

    torch.manual_seed(0)
    tower = timm.create_model("vit_tiny_patch16_224", num_classes=0, **TOWER)
    path = tmp_path_factory.mktemp("tower") / "tower.pth"
    torch.save(tower.state_dict(), path)
    return path


def _complete_spec(llm_dir, tower_file, **llm_config) -> ModelSpec:
    """Like the LLaVA-1.5 entries: full architecture config, vocabulary grown past the checkpoint's 40 rows."""
    return ModelSpec(
        name="local-complete",
        vision_model="vit_tiny_patch16_224",
        vision_kwargs={**TOWER, "pretrained_cfg_overlay": {"file": str(tower_file)}},
        llm=str(llm_dir),
        llm_config={**LLAMA, "vocab_size": 64, **llm_config},
        image_token_id=40,
    )


def test_checkpoint_is_loaded_then_resized_to_the_declared_vocabulary(llm_dir, tower_file, caplog):
    saved = AutoModelForCausalLM.from_pretrained(llm_dir)
    with caplog.at_level(logging.WARNING):
        net = build_network(_complete_spec(llm_dir, tower_file), pretrained=True)
    assert not [r for r in caplog.records if r.name.startswith("lightning_mm")]  # the spec agrees with the checkpoint
    emb = net.llm.get_input_embeddings().weight
    assert emb.shape == (64, 32) and net.llm.get_output_embeddings().weight.shape == (64, 32)
    assert emb.dtype == torch.float32  # not the checkpoint's bfloat16
    torch.testing.assert_close(emb[:40], saved.get_input_embeddings().weight.float())
    layer = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(net.llm.state_dict()[layer], saved.state_dict()[layer].float())
    assert net.image_token_id == 40


def test_random_build_of_a_complete_spec_matches_the_pretrained_architecture(llm_dir, tower_file):
    spec = _complete_spec(llm_dir, tower_file)
    random, loaded = build_network(spec), build_network(spec, pretrained=True)
    shapes = {k: v.shape for k, v in random.state_dict().items()}
    assert shapes == {k: v.shape for k, v in loaded.state_dict().items()}


def test_config_values_that_change_the_checkpoint_are_applied_and_logged(llm_dir, tower_file, caplog):
    with caplog.at_level(logging.WARNING):
        net = build_network(_complete_spec(llm_dir, tower_file, rms_norm_eps=1e-6), pretrained=True)
    assert net.llm.config.rms_norm_eps == 1e-6
    assert "rms_norm_eps" in caplog.text


def test_model_type_mismatch_is_an_error(llm_dir, tower_file):
    with pytest.raises(ValueError, match="expects a 'qwen2' LM"):
        build_network(_complete_spec(llm_dir, tower_file, model_type="qwen2"), pretrained=True)


def test_create_model_pretrained_with_local_artefacts(llm_dir, tower_file):
    tower = torch.load(tower_file, weights_only=True)
    # the tiny entry's vocabulary comes from its tokenizer, larger than the checkpoint's 40 rows: grown to fit
    module = create_model(
        "tiny",
        pretrained=True,
        llm=str(llm_dir),
        llm_config={k: v for k, v in LLAMA.items() if k != "vocab_size"},
        vision_kwargs={**TOWER, "pretrained_cfg_overlay": {"file": str(tower_file)}},
    )
    torch.testing.assert_close(module.network.vision.model.patch_embed.proj.weight, tower["patch_embed.proj.weight"])
    assert module.network.llm.get_input_embeddings().num_embeddings == len(module.tokenizer)
    assert module.pretrained and module.hparams.pretrained


def test_without_model_type_the_checkpoint_config_is_read_and_overridden(llm_dir):
    spec = ModelSpec(
        name="local-config",
        vision_model="vit_tiny_patch16_224",
        vision_kwargs=TOWER,
        llm=str(llm_dir),
        llm_config={"num_hidden_layers": 1, "vocab_size": 64},
        image_token_id=40,
    )
    with torch.device("meta"):
        net = build_network(spec)
    assert net.llm.config.hidden_size == LLAMA["hidden_size"]  # from the checkpoint's config.json
    assert net.llm.config.num_hidden_layers == 1
    assert net.llm.get_input_embeddings().num_embeddings == 64


def _save_checkpoint(module: MultimodalModule, path: Path, adapter_only: bool = False) -> dict:
    """What Lightning's ``save_checkpoint`` writes for the module (state dict, hyperparameters, the module's own),
    with ``AdapterOnlyCheckpoint``'s hook first when ``adapter_only``."""
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    if adapter_only:
        make_adapter_only(module, checkpoint)
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return checkpoint


def test_a_whole_checkpoint_loads_without_the_pretrained_sources(llm_dir, tower_file, tmp_path):
    llm_copy = Path(shutil.copytree(llm_dir, tmp_path / "llm"))
    tower_copy = Path(shutil.copy(tower_file, tmp_path / "tower.pth"))
    overrides = {
        "llm": str(llm_copy),
        "llm_config": {k: v for k, v in LLAMA.items() if k != "vocab_size"},
        "vision_kwargs": {**TOWER, "pretrained_cfg_overlay": {"file": str(tower_copy)}},
    }
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", pretrained=True, model_overrides=overrides)
    module.set_placement("llm", Placement("lora", r=2, alpha=4.0, dropout=0.1))
    module.configure_model()
    with torch.no_grad():  # "trained": the weights differ from the pretrained ones
        for p in module.parameters():
            p.add_(0.01)
    whole, adapters = tmp_path / "whole.ckpt", tmp_path / "adapters.ckpt"
    saved_whole = _save_checkpoint(module, whole)
    saved_adapters = _save_checkpoint(module, adapters, adapter_only=True)
    # a whole checkpoint is built from configs; the module's own setting is kept for what follows
    assert saved_whole["hyper_parameters"]["pretrained"] is False and saved_whole[CHECKPOINT_KEY]["pretrained"]
    assert saved_adapters["hyper_parameters"]["pretrained"] is True and saved_adapters[CHECKPOINT_KEY]["adapter_only"]

    (llm_copy / "model.safetensors").unlink()  # the pretrained weights are gone; the configs stay
    tower_copy.unlink()
    with pytest.raises((OSError, RuntimeError)):
        MultimodalModule(model="tiny", pretrained=True, model_overrides=overrides).configure_model()
    loaded = MultimodalModule.load_from_checkpoint(whole)
    assert loaded.pretrained and loaded.hparams.pretrained  # still recorded for what follows
    state = loaded.state_dict()
    assert state.keys() == module.state_dict().keys()
    for name, value in module.state_dict().items():
        torch.testing.assert_close(state[name], value, msg=name)
    with pytest.raises((OSError, RuntimeError)):  # an adapter-only checkpoint needs its pretrained base
        MultimodalModule.load_from_checkpoint(adapters)
