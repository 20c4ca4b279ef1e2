"""KeyRule: renames, fused and split tensors, extra singleton dims, both directions."""

from __future__ import annotations

import torch

from lightning_mm.interop.keys import KeyRule, apply_rules

RULES = [
    KeyRule(("blocks.{i}.qkv.{p}",), tuple(f"layers.{{i}}.{x}.{{p}}" for x in "qkv"), (1,), (1, 1, 1)),
    KeyRule(("pool.q.weight", "pool.kv.weight"), ("head.in_proj_weight",), (1, 2), (3,)),
    KeyRule.rename("cls_token", "class_embedding", lead=2),
]


def test_fused_split_and_reshaped_tensors_round_trip():
    d = 4
    hf = {
        **{
            f"layers.{i}.{x}.{p}": torch.randn(d, d) if p == "weight" else torch.randn(d)
            for i in (0, 11)
            for x in "qkv"
            for p in ("weight", "bias")
        },
        "head.in_proj_weight": torch.randn(3 * d, d),  # (3D, D)
        "class_embedding": torch.randn(d),  # (D,)
        "something.else": torch.randn(1),
    }
    ours, left = apply_rules(hf, RULES, "ours")
    assert left == ["something.else"]
    assert ours["blocks.11.qkv.weight"].shape == (3 * d, d)
    assert torch.equal(ours["blocks.11.qkv.bias"][d : 2 * d], hf["layers.11.k.bias"])  # q; k; v
    assert ours["pool.q.weight"].shape == (d, d) and ours["pool.kv.weight"].shape == (2 * d, d)
    assert ours["cls_token"].shape == (1, 1, d)
    back, left = apply_rules(ours, RULES, "hf")
    assert left == []
    assert sorted(back) == sorted(k for k in hf if k != "something.else")
    assert all(torch.equal(back[k], hf[k]) for k in back)


def test_an_incomplete_group_is_left_over():
    hf = {"layers.0.q.weight": torch.randn(2, 2), "layers.0.k.weight": torch.randn(2, 2)}  # v missing
    ours, left = apply_rules(hf, RULES, "ours")
    assert ours == {} and left == ["layers.0.k.weight", "layers.0.q.weight"]
