"""``export_hf``: merge LoRA and write a folder that transformers' VLM class of the model's family and
``AutoProcessor`` load with plain ``from_pretrained``.

The weights go through transformers' own model: built from the converted config without initialising its weights,
the converted tensors assigned strictly (a name left over on either side is an error), then ``save_pretrained``, so
the files have the layout, sharding and tied-weight handling transformers writes. The processor comes from the family
(:meth:`~lightning_mm.families.Family.hf_processor`) with the model's :class:`~lightning_mm.data.DataContract`: the
image aspect and chat template the model was trained with.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.initialization import no_init_weights

from lightning_mm.families.registry import family_for_model_type, get_family, known_model_types
from lightning_mm.interop.hf_config import TEMPLATE_KEY
from lightning_mm.interop.output_dir import check_export_target, written_whole
from lightning_mm.placement import merge_lora

__all__ = ["export_hf", "save_hf_model", "to_hf_model"]


def to_hf_model(network: torch.nn.Module, model_type: str) -> Any:
    """transformers' model of ``model_type`` holding ``network``'s weights (shared, not copied; LoRA merged first).

    Raises:
        ValueError: when the network cannot be represented (tower, projector, prefix tokens) or a weight has no
            transformers name, naming it.
    """
    found = family_for_model_type(model_type)
    if found is None:
        raise ValueError(f"No family writes transformers {model_type!r}; known: {', '.join(known_model_types())}.")
    converter = found[1]
    config = converter.hf_config(network)
    state, leftover = converter.to_hf(network.state_dict(), network)
    if leftover:
        raise ValueError(f"No transformers {model_type} name for: {', '.join(leftover[:8])}.")
    with no_init_weights():  # parameters left uninitialised (all replaced below), buffers (rotary, positions) computed
        model = converter.hf_model_class(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            f"Converted weights do not fit transformers' {type(model).__name__}: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}."
        )
    if getattr(config.get_text_config(), "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()


def export_hf(
    module: Any, output_dir: str | Path, dtype: torch.dtype | None = None, model_type: str | None = None
) -> Path:
    """Write ``module``'s network, tokenizer and processor in transformers' format of its family.

    Every LoRA adapter is merged (into a copy: the module keeps its adapters). The folder loads with the family's
    transformers class (``LlavaForConditionalGeneration`` and the others its converters name) and
    ``AutoProcessor.from_pretrained(output_dir)``; the processor prepares images with the module's ``image_aspect``.

    The folder is written whole: into a hidden sibling folder, then moved into place. An earlier export there is
    replaced whole; an export that fails or is killed midway leaves it as it was.

    Args:
        module: A built :class:`~lightning_mm.MultimodalModule` (``configure_model()`` called).
        output_dir: Directory to write: new, empty, or holding an earlier export (replaced).
        dtype: Dtype of the written weights (None: as trained).
        model_type: transformers ``model_type`` to write (None: the family's choice for this network, e.g.
            one of two formats by the network's settings; another of the family's formats when asked).

    Returns:
        The output directory.

    Raises:
        ValueError: for what transformers' class cannot represent (a DINOv2 tower with registers, another projector),
            naming why.
        ExportTargetError: ``output_dir`` is a file, or a folder holding files that are not an export (nothing is
            written).
    """
    family = get_family(module.spec.family)
    if module.network is None:
        raise RuntimeError("The network is not built yet: call configure_model() first.")
    out = check_export_target(output_dir)  # before any work: a file or a foreign folder
    model_type = model_type or family.hf_model_type(module.network)
    family.converter(model_type)  # the family writes this format: else an error naming the ones it has
    with written_whole(out) as folder:
        model, network = save_hf_model(module, folder, model_type, dtype)
        family.hf_processor(module.data_contract, network, model.config).save_pretrained(folder)
    return out


def save_hf_model(module: Any, out: Path, model_type: str, dtype: torch.dtype | None) -> tuple[Any, nn.Module]:
    """Write a copy of ``module``'s network, LoRA merged, as transformers' model of ``model_type`` into ``out``.

    It writes into ``out`` as it is (:func:`export_hf` gives it a fresh folder that replaces the target whole).

    The config records our chat template by name (transformers keeps unknown config keys), so an import renders
    prompts as training did.

    Returns:
        (transformers' model, our merged copy of the network).
    """
    if module.network is None:
        raise RuntimeError("The network is not built yet: call configure_model() first.")
    network = copy.deepcopy(module.network).eval()
    merge_lora(network)
    model = to_hf_model(network, model_type)
    if dtype is not None:
        model = model.to(dtype)
    setattr(model.config, TEMPLATE_KEY, module.spec.template)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return model, network
