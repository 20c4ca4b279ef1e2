"""The ``parts`` export: each component in its own library's format, and the network rebuilt from it.

Layout of the output directory::

    model_spec.json        the ModelSpec, the image aspect and where each part lives (read back by :func:`load_exported`)
    llm/                   the language model + tokenizer, transformers ``save_pretrained`` (plain ``from_pretrained``)
    vision/                the timm tower: config.json + model.safetensors (``timm.create_model("local-dir:...")``)
    projector.safetensors  the projector's state dict

The folder is written whole (:func:`~lightning_mm.interop.output_dir.written_whole`): into a hidden sibling, then
moved into place, an earlier export there replaced whole; a folder holding other files is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf

from lightning_mm.interop.output_dir import check_export_target, written_whole
from lightning_mm.models import VisionLanguageModel
from lightning_mm.placement import merge_lora
from lightning_mm.zoo import ModelSpec, build_network, load_tokenizer

__all__ = [
    "FORMAT_VERSION",
    "PARTS_ENTRIES",
    "PROJECTOR_FILE",
    "SPEC_FILE",
    "export_model",
    "exported_spec",
    "load_exported",
    "read_export_meta",
]

SPEC_FILE = "model_spec.json"
PROJECTOR_FILE = "projector.safetensors"
FORMAT_VERSION = 1
#: What a parts export holds (besides its manifest): an export of an earlier version holding these alone is replaced.
PARTS_ENTRIES = (SPEC_FILE, "llm", "vision", PROJECTOR_FILE)


def export_model(
    module: Any,
    output_dir: str | Path,
    in_place: bool = False,
    safe_serialization: bool = True,
) -> Path:
    """Merge LoRA adapters into the base weights and write the LLM, vision tower, projector and model spec.

    The folder is written whole: into a hidden sibling folder, then moved into place. An earlier export there is
    replaced whole (none of its files is left); an export that fails or is killed midway leaves it as it was.

    Args:
        module: A built MultimodalModule (``configure_model()`` called).
        output_dir: Directory to write: new, empty, or holding an earlier export (replaced).
        in_place: Merge the module's own network (saves a copy of the weights; the module loses its adapters).
        safe_serialization: Write safetensors (else PyTorch pickles) for the LLM and the vision tower.

    Returns:
        The output directory.

    Raises:
        ExportTargetError: ``output_dir`` is a file, or a folder holding files that are not an export (nothing is
            written).
    """
    if module.network is None:
        raise RuntimeError("The network is not built yet: call configure_model() first.")
    out = check_export_target(output_dir, PARTS_ENTRIES)  # before any work: a file or a foreign folder
    network = module.network if in_place else copy.deepcopy(module.network)
    network.eval()
    merged = merge_lora(network)
    for p in network.parameters():
        p.requires_grad_(False)

    spec = module.spec
    with written_whole(out, PARTS_ENTRIES) as folder:
        network.llm.save_pretrained(folder / "llm", safe_serialization=safe_serialization)
        module.tokenizer.save_pretrained(folder / "llm")
        vision_args = dict(spec.vision_kwargs)
        save_for_hf(
            network.vision.model, folder / "vision", model_args=vision_args, safe_serialization=safe_serialization
        )
        projector = {k: v.detach().contiguous() for k, v in network.projector.state_dict().items()}
        save_file(projector, folder / PROJECTOR_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "spec": dataclasses.asdict(spec),
            "llm": "llm",
            "vision": "vision",
            "projector": PROJECTOR_FILE,
            "image_token_id": int(network.image_token_id),
            "image_aspect": module.image_aspect,
            "merged_lora_layers": merged,
        }
        (folder / SPEC_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_export_meta(export_dir: str | Path) -> dict[str, Any]:
    """The ``model_spec.json`` of an export directory (its format version checked)."""
    root = Path(export_dir)
    meta = json.loads((root / SPEC_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{root / SPEC_FILE}: unsupported export format {meta.get('format_version')!r}.")
    return meta


def exported_spec(export_dir: str | Path) -> ModelSpec:
    """The spec of an export directory: the trained model's, reading its parts from the directory."""
    root = Path(export_dir)
    meta = read_export_meta(root)
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
        projector_weights=None,  # the merged projector is loaded by load_exported, not the spec's original file
    )
    return ModelSpec(**fields)


def load_exported(export_dir: str | Path, torch_dtype: torch.dtype | None = None) -> VisionLanguageModel:
    """Rebuild the merged network from an export directory, through timm's and transformers' own loading paths.

    Args:
        export_dir: Output of :func:`export_model`.
        torch_dtype: Parameter dtype of the LLM (default: as saved).

    Returns:
        A :class:`~lightning_mm.models.VisionLanguageModel` in eval mode.
    """
    root = Path(export_dir)
    spec = exported_spec(root)
    network = build_network(spec, load_tokenizer(spec), pretrained=True, torch_dtype=torch_dtype)
    network.projector.load_state_dict(load_file(root / read_export_meta(root)["projector"]))
    return network.eval()
