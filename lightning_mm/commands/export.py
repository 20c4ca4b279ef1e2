"""``lightning-mm export``: merge LoRA into the base weights and write the model for other libraries to load.

``--format hf`` writes transformers' format of the model's family (:func:`lightning_mm.export_hf`): one folder that
the family's transformers class and ``AutoProcessor.from_pretrained`` load. The default ``--format parts`` writes
each component in its own library's format (:mod:`lightning_mm.interop.parts`).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lightning_mm.checkpoint.load import load_module
from lightning_mm.commands.registry import register_command
from lightning_mm.interop.export import export_hf
from lightning_mm.interop.output_dir import check_export_target
from lightning_mm.interop.parts import PARTS_ENTRIES, PROJECTOR_FILE, SPEC_FILE, export_model

__all__ = ["run"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@register_command(
    "export", "merge LoRA and write transformers' format (--format hf) or each part in its library's format"
)
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-mm export",
        description="Merge LoRA adapters into the base weights and write the model: in transformers' format of its "
        "family (--format hf; the image processor reproduces the model's image_aspect), or the LLM with "
        "save_pretrained, the vision tower in timm's format, the projector and the model spec (--format parts).",
    )
    parser.add_argument("checkpoint", help="Lightning checkpoint (.ckpt), full or adapter-only")
    parser.add_argument(
        "output_dir",
        help="directory to write: new, empty, or holding an earlier export, which is replaced whole (the export is "
        "written beside it, then moved into place)",
    )
    parser.add_argument(
        "--module-class", default="lightning_mm.MultimodalModule", help="dotted path of the LightningModule class"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the training run: rebuilds a randomly initialised base for an adapter-only checkpoint",
    )
    parser.add_argument("--pickle", action="store_true", help="write PyTorch pickles instead of safetensors")
    parser.add_argument(
        "--format",
        choices=("parts", "hf"),
        default="parts",
        help="parts: LLM, timm tower, projector and spec; hf: transformers' class of the model's family + "
        "AutoProcessor",
    )
    parser.add_argument(
        "--hf-model-type",
        default=None,
        help="--format hf: transformers model_type to write (default: the one the model's family writes it as)",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(_DTYPES),
        default=None,
        help="--format hf: dtype of the written weights (default: as trained)",
    )
    args = parser.parse_args(argv)
    if args.format != "hf" and (args.hf_model_type or args.dtype):
        parser.error("--hf-model-type and --dtype apply to --format hf only")
    try:
        check_export_target(args.output_dir, PARTS_ENTRIES if args.format == "parts" else ())  # before loading
        module = load_module(args.checkpoint, args.module_class, seed=args.seed)
        if args.format == "hf":
            dtype = _DTYPES[args.dtype] if args.dtype else None
            out = export_hf(module, args.output_dir, dtype=dtype, model_type=args.hf_model_type)
        else:
            out = export_model(module, args.output_dir, in_place=True, safe_serialization=not args.pickle)
    except (ValueError, OSError) as err:  # bad input, a checkpoint or base model that cannot be found
        print(f"lightning-mm export: error: {err}", file=sys.stderr)
        return 2
    if args.format == "hf":
        print(f"Exported {module.spec.name} to {out} in transformers' format (LoRA merged).")
        return 0
    meta = json.loads((out / SPEC_FILE).read_text())
    print(f"Exported {module.spec.name} to {out} ({meta['merged_lora_layers']} LoRA layers merged):")
    for part in ("llm/", "vision/", PROJECTOR_FILE, SPEC_FILE):
        print(f"  {out / part}")
    return 0
