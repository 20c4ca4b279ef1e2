"""``lightning-mm export``: merge LoRA into the base weights and write the model for other libraries to load.

``--format hf`` writes transformers' LLaVA format (:func:`lightning_mm.export_hf`): one folder that
``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained`` load.

The default ``--format parts`` writes each component in its own library's format. Layout of the output directory::

    model_spec.json        the ModelSpec and where each part lives (read back by :func:`load_exported`)
    llm/                   the language model + tokenizer, transformers ``save_pretrained`` (plain ``from_pretrained``)
    vision/                the timm tower: config.json + model.safetensors (``timm.create_model("local-dir:...")``)
    projector.safetensors  the projector's state dict
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf

from lightning_mm.checkpoint_file import check_checkpoint_file
from lightning_mm.checkpoint_format import is_adapter_only
from lightning_mm.commands.registry import register_command
from lightning_mm.data.images import ASPECT_MODES
from lightning_mm.interop.export import export_hf
from lightning_mm.placement import merge_lora
from lightning_mm.zoo import ModelSpec, build_network, load_tokenizer

__all__ = ["export_model", "load_exported", "load_module", "run"]

SPEC_FILE = "model_spec.json"
PROJECTOR_FILE = "projector.safetensors"
FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_module(
    checkpoint_path: str | Path,
    module_class: str = "lightning_mm.MultimodalModule",
    seed: int | None = None,
) -> Any:
    """Load a MultimodalModule (or subclass) from a Lightning checkpoint, adapters rebuilt and weights loaded.

    A full checkpoint holds every weight, so the base is built without downloading pretrained weights; an adapter-only
    checkpoint builds the base as the model's config says (pretrained weights when it was trained on them).

    Args:
        checkpoint_path: ``.ckpt`` file written by Lightning.
        module_class: Dotted path of the LightningModule class (``package.module.Class``).
        seed: Seed set before the base is built: an adapter-only checkpoint of a randomly initialised base needs the
            run's seed (``seed_everything``) to rebuild the same base.
    """
    check_checkpoint_file(checkpoint_path)  # missing, empty or truncated: a short error naming the file
    if seed is not None:
        L.seed_everything(seed, verbose=False)

    module_path, _, name = module_class.rpartition(".")
    cls = getattr(importlib.import_module(module_path), name)
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    overrides = {} if is_adapter_only(checkpoint) else {"pretrained": False}
    module = cls.load_from_checkpoint(checkpoint_path, map_location="cpu", **overrides)
    if getattr(module, "base_mismatch", None):
        raise ValueError(
            f"{checkpoint_path} holds adapters trained on another base of the {', '.join(module.base_mismatch)}: "
            "give the training run's seed (--seed) when its base was a random init."
        )
    module.configure_model()
    return module.eval()


def export_model(
    module: Any,
    output_dir: str | Path,
    in_place: bool = False,
    safe_serialization: bool = True,
) -> Path:
    """Merge LoRA adapters into the base weights and write the LLM, vision tower, projector and model spec.

    Args:
        module: A built MultimodalModule (``configure_model()`` called).
        output_dir: Directory to write (created if missing).
        in_place: Merge the module's own network (saves a copy of the weights; the module loses its adapters).
        safe_serialization: Write safetensors (else PyTorch pickles) for the LLM and the vision tower.

    Returns:
        The output directory.
    """
    if module.network is None:
        raise RuntimeError("The network is not built yet: call configure_model() first.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    network = module.network if in_place else copy.deepcopy(module.network)
    network.eval()
    merged = merge_lora(network)
    for p in network.parameters():
        p.requires_grad_(False)

    network.llm.save_pretrained(out / "llm", safe_serialization=safe_serialization)
    module.tokenizer.save_pretrained(out / "llm")
    spec = module.spec
    save_for_hf(
        network.vision.model, out / "vision", model_args=dict(spec.vision_kwargs), safe_serialization=safe_serialization
    )
    save_file({k: v.detach().contiguous() for k, v in network.projector.state_dict().items()}, out / PROJECTOR_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "spec": dataclasses.asdict(spec),
        "llm": "llm",
        "vision": "vision",
        "projector": PROJECTOR_FILE,
        "image_token_id": int(network.image_token_id),
        "merged_lora_layers": merged,
    }
    (out / SPEC_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_exported(export_dir: str | Path, torch_dtype: torch.dtype | None = None):
    """Rebuild the merged network from an export directory, through timm's and transformers' own loading paths.

    Args:
        export_dir: Output of :func:`export_model`.
        torch_dtype: Parameter dtype of the LLM (default: as saved).

    Returns:
        A :class:`~lightning_mm.models.VisionLanguageModel` in eval mode.
    """
    root = Path(export_dir)
    meta = json.loads((root / SPEC_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{root / SPEC_FILE}: unsupported export format {meta.get('format_version')!r}.")
    vision_dir = root / meta["vision"]
    weights = next(
        (vision_dir / n for n in ("model.safetensors", "pytorch_model.bin") if (vision_dir / n).exists()), None
    )
    if weights is None:
        raise FileNotFoundError(f"No vision tower weights in {vision_dir}.")
    known = {f.name for f in dataclasses.fields(ModelSpec)}
    fields = {k: v for k, v in meta["spec"].items() if k in known}
    fields.update(
        llm=str(root / meta["llm"]),
        llm_config={},  # the saved config.json is complete
        tokenizer=str(root / meta["llm"]),
        vision_kwargs={**fields["vision_kwargs"], "pretrained_cfg_overlay": {"file": str(weights)}},
    )
    if "projector_weights" in known:
        fields["projector_weights"] = None  # the merged projector is loaded below, not the spec's original file
    spec = ModelSpec(**fields)
    network = build_network(spec, load_tokenizer(spec), pretrained=True, torch_dtype=torch_dtype)
    network.projector.load_state_dict(load_file(root / meta["projector"]))
    return network.eval()


@register_command(
    "export", "merge LoRA and write transformers' LLaVA format (--format hf) or each part in its library's format"
)
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-mm export",
        description="Merge LoRA adapters into the base weights and write the model: in transformers' LLaVA format "
        "(--format hf), or the LLM with save_pretrained, the vision tower in timm's format, the projector and the "
        "model spec (--format parts).",
    )
    parser.add_argument("checkpoint", help="Lightning checkpoint (.ckpt), full or adapter-only")
    parser.add_argument("output_dir", help="directory to write")
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
        help="parts: LLM, timm tower, projector and spec; hf: transformers' LLaVA (LlavaForConditionalGeneration + "
        "AutoProcessor)",
    )
    parser.add_argument(
        "--image-aspect",
        choices=ASPECT_MODES,
        default=None,
        help="--format hf: the data's image_aspect the model was trained with, reproduced by the exported image "
        "processor ('pad' only approximately; default: crop)",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(_DTYPES),
        default=None,
        help="--format hf: dtype of the written weights (default: as trained)",
    )
    args = parser.parse_args(argv)
    if args.format != "hf" and (args.image_aspect or args.dtype):
        parser.error("--image-aspect and --dtype apply to --format hf only")
    try:
        module = load_module(args.checkpoint, args.module_class, seed=args.seed)
        if args.format == "hf":
            dtype = _DTYPES[args.dtype] if args.dtype else None
            out = export_hf(module, args.output_dir, image_aspect=args.image_aspect or "crop", dtype=dtype)
    except (ValueError, OSError) as err:  # bad input, a checkpoint or base model that cannot be found
        print(f"lightning-mm export: error: {err}", file=sys.stderr)
        return 2
    if args.format == "hf":
        print(f"Exported {module.spec.name} to {out} in transformers' LLaVA format (LoRA merged).")
        return 0
    out = export_model(module, args.output_dir, in_place=True, safe_serialization=not args.pickle)
    meta = json.loads((out / SPEC_FILE).read_text())
    print(f"Exported {module.spec.name} to {out} ({meta['merged_lora_layers']} LoRA layers merged):")
    for part in ("llm/", "vision/", PROJECTOR_FILE, SPEC_FILE):
        print(f"  {out / part}")
    return 0
