"""Benchmark: peak memory of a DPO step with the LoRA reference (adapters off) against a frozen-copy reference.

Two sides, each in its own process, on the ``tiny`` model widened (a 6-layer, 768-wide LLM and a 12-layer tower at
``--size full``) and a batch of synthetic preference pairs, LoRA on every component:

* ``adapters``: ``PreferenceModule(reference="adapters")``: the reference is the network with its adapters switched
  off, no second copy of the weights;
* ``copy``: ``PreferenceModule(reference="copy")``: a frozen deep copy of the network is the reference (what a
  trainer without adapter switching keeps: TRL's ``ref_model``).

Peak memory: growth of ``ru_maxrss`` over the resident set before the module is built (libraries loaded, the batch
allocated), through the build and ``--steps`` optimiser steps: weights, the reference, adapters' optimiser state,
gradients and activations.

Usage::

    python benchmarks/dpo_memory.py                  # about a minute on 2 cores
    python benchmarks/dpo_memory.py --tiny --json out.json   # seconds, for CI: both sides in one process
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from _memory import peak_growth

from lightning_mm.placement import Placement
from lightning_mm.preference import PreferenceModule, SyntheticPreferenceDataModule

SIDES = ("adapters", "copy")
WIDE = {
    "llm_config": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 12},
}


def _side(name: str, tiny: bool, steps: int, pairs: int) -> dict:
    torch.manual_seed(0)
    overrides = None if tiny else WIDE
    probe = PreferenceModule(model="tiny", model_overrides=overrides)
    dm = SyntheticPreferenceDataModule(train_samples=pairs, val_samples=pairs, batch_size=pairs)
    dm.bind(probe.data_contract)
    batch = next(iter(dm.train_dataloader()))

    def run() -> float:
        module = PreferenceModule(model="tiny", model_overrides=overrides, reference=name)
        for component in ("vision", "projector", "llm"):
            module.set_placement(component, Placement("lora", r=8))
        module.configure_model()
        module.log = lambda *args, **kwargs: None
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
        loss = torch.zeros(())
        for _ in range(steps):
            loss = module.pair_loss(batch).losses.mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return float(loss)

    out = peak_growth(run, trim=True)
    return {"side": name, "peak_mib": out["peak_mib"], "loss": out["result"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the plain tiny model (seconds, for CI)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)  # one side, in a child
    args = parser.parse_args()
    if args.side:
        print(json.dumps(_side(args.side, args.tiny, args.steps, args.pairs)))
        return
    results = {}
    for side in SIDES:
        if args.tiny:  # CI: both sides in this process (the script runs; the memory split is not meaningful)
            results[side] = _side(side, True, 1, 2)
        else:
            cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--pairs", str(args.pairs)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{side:9s} peak {results[side]['peak_mib']:8.1f} MiB  loss {results[side]['loss']:.4f}")
    base = results["copy"]["peak_mib"]
    ratio = results["adapters"]["peak_mib"] / base if base > 0 else float("nan")
    print(f"memory ratio adapters/copy: {ratio:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"sides": results, "ratio": ratio}, fh, indent=2)


if __name__ == "__main__":
    main()
