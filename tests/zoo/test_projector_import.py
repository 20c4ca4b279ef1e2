"""Import of LLaVA's stage-1 projector file (mm_projector.bin) and of this project's checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lightning_mm.models import build_projector
from lightning_mm.models.projector_io import load_projector_weights, projector_state_dict, save_projector_weights
from lightning_mm.zoo import build_network, get_spec


def _llava_file(tmp_path, vision_dim=16, text_dim=24, dtype=torch.bfloat16):
    """A file in LLaVA's layout: what its pretraining stage saves for mlp2x_gelu (Linear, GELU, Linear)."""
    g = torch.Generator().manual_seed(0)
    state = {
        "model.mm_projector.0.weight": torch.randn(text_dim, vision_dim, generator=g).to(dtype),
        "model.mm_projector.0.bias": torch.randn(text_dim, generator=g).to(dtype),
        "model.mm_projector.2.weight": torch.randn(text_dim, text_dim, generator=g).to(dtype),
        "model.mm_projector.2.bias": torch.randn(text_dim, generator=g).to(dtype),
    }
    path = tmp_path / "mm_projector.bin"
    torch.save(state, path)
    return path, state


def test_llava_mm_projector_bin_loads_and_computes_llavas_function(tmp_path):
    path, state = _llava_file(tmp_path)
    projector = build_projector("mlp2x_gelu", 16, 24)
    load_projector_weights(projector, path)
    w0, b0, w2, b2 = (state[f"model.mm_projector.{k}"].float() for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    x = torch.randn(2, 5, 16)
    expected = F.linear(F.gelu(F.linear(x, w0, b0)), w2, b2)
    torch.testing.assert_close(projector(x), expected)
    assert projector[0].weight.dtype == torch.float32  # cast to the projector's dtype


def test_lightning_checkpoint_and_bare_layouts(tmp_path):
    src = build_projector("mlp2x_gelu", 8, 12)
    ckpt = {"state_dict": {f"network.projector.{k}": v for k, v in src.state_dict().items()}, "epoch": 0}
    ckpt["state_dict"]["network.llm.lm_head.weight"] = torch.zeros(3, 12)  # other components are ignored
    for contents in (ckpt, src.state_dict()):
        dst = build_projector("mlp2x_gelu", 8, 12)
        load_projector_weights(dst, contents)
        for key, value in src.state_dict().items():
            torch.testing.assert_close(dst.state_dict()[key], value)


def test_save_writes_llavas_layout_and_round_trips(tmp_path):
    src = build_projector("mlp2x_gelu", 8, 12)
    path = tmp_path / "mm_projector.bin"
    save_projector_weights(src, path)
    assert sorted(torch.load(path, weights_only=True)) == [
        "model.mm_projector.0.bias",
        "model.mm_projector.0.weight",
        "model.mm_projector.2.bias",
        "model.mm_projector.2.weight",
    ]
    dst = build_projector("mlp2x_gelu", 8, 12)
    load_projector_weights(dst, path)
    x = torch.randn(3, 8)
    torch.testing.assert_close(dst(x), src(x))


def test_mismatches_are_clear_errors(tmp_path):
    path, _ = _llava_file(tmp_path, vision_dim=16, text_dim=24)
    with pytest.raises(ValueError, match=r"'0.weight'.*\(24, 16\).*\(32, 16\)"):
        load_projector_weights(build_projector("mlp2x_gelu", 16, 32), path)
    with pytest.raises(ValueError, match=r"unexpected \['2.bias', '2.weight'\]"):
        load_projector_weights(build_projector("linear", 16, 24), path)
    with pytest.raises(ValueError, match="No projector weights found"):
        projector_state_dict({"model.layers.0.weight": torch.zeros(1)})


def test_spec_loads_projector_weights_only_when_pretrained(tmp_path):
    spec = get_spec("tiny")
    reference = build_network(spec)
    path = tmp_path / "mm_projector.bin"
    save_projector_weights(reference.projector, path)
    spec = spec.replace(projector_weights=str(path))
    torch.manual_seed(1)
    random = build_network(spec, pretrained=False)
    assert not torch.equal(random.projector[0].weight, reference.projector[0].weight)
    # pretrained=True: every source the spec names; the tiny tower's pretrained weights come from a local file
    tower_file = tmp_path / "tower.pth"
    torch.save(reference.vision.model.state_dict(), tower_file)
    spec = spec.replace(vision_kwargs={"pretrained_cfg_overlay": {"file": str(tower_file)}})
    llm_dir = tmp_path / "llm"
    reference.llm.save_pretrained(llm_dir)
    loaded = build_network(spec.replace(llm=str(llm_dir)), pretrained=True)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)
