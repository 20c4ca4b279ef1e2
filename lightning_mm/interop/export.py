"""``export_hf``: merge LoRA and write a folder that transformers' ``LlavaForConditionalGeneration`` and
``AutoProcessor`` load with plain ``from_pretrained``.

The weights go through transformers' own model: built from the converted config without initialising its weights,
the converted tensors assigned strictly (a name left over on either side is an error), then ``save_pretrained``, so
the files have the layout, sharding and tied-weight handling transformers writes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.initialization import no_init_weights

from lightning_mm.interop.anyres_processor import anyres_hf_processor
from lightning_mm.interop.converters import converter_for_network, family_of
from lightning_mm.interop.llava import TEMPLATE_KEY
from lightning_mm.interop.processor import hf_image_processor, hf_processor
from lightning_mm.placement import merge_lora

__all__ = ["export_hf", "save_hf_model", "to_hf_model"]


def to_hf_model(network: torch.nn.Module, family: str | None = None) -> Any:
    """transformers' model holding ``network``'s weights (shared, not copied; LoRA must be merged first).

    ``family`` (a transformers ``model_type``) defaults to the network's own (:func:`family_of`: ``llava``, or
    ``llava_next`` / ``llava_onevision`` for any-resolution tiling).

    Raises:
        ValueError: when the network cannot be represented (tower, projector, prefix tokens) or a weight has no
            transformers name, naming it.
    """
    family = family or family_of(network)
    converter = converter_for_network(family)
    config = converter.hf_config(network)
    state, leftover = converter.to_hf(network.state_dict(), network)
    if leftover:
        raise ValueError(f"No transformers {family} name for: {', '.join(leftover[:8])}.")
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
    module: Any,
    output_dir: str | Path,
    image_aspect: str = "crop",
    dtype: torch.dtype | None = None,
    family: str | None = None,
) -> Path:
    """Write ``module``'s network, tokenizer and image processor in transformers' LLaVA format.

    Every LoRA adapter is merged (into a copy: the module keeps its adapters). The folder loads with
    ``LlavaForConditionalGeneration.from_pretrained(output_dir)`` and ``AutoProcessor.from_pretrained(output_dir)``.

    Args:
        module: A built :class:`~lightning_mm.MultimodalModule` (``configure_model()`` called).
        output_dir: Directory to write (created if missing).
        image_aspect: The aspect mode the data used (``crop``, ``resize``; ``pad`` is approximated, see
            :mod:`lightning_mm.interop.processor`).
        dtype: Dtype of the written weights (None: as trained).
        family: transformers model family to write (None: the network's own, ``llava``, ``llava_next`` or
            ``llava_onevision``). A tiling network's processor reproduces its tiling; ``image_aspect`` is not read.

    Returns:
        The output directory.

    Raises:
        ValueError: for what transformers' LLaVA cannot represent (a DINOv2 tower with registers, another projector),
            naming why.
    """
    out = Path(output_dir)
    model, network = save_hf_model(module, out, family, dtype)
    tower = network.vision
    config = model.config
    if family_of(network) != "llava":
        processor = anyres_hf_processor(network, module.tokenizer, module.image_data_config, module.spec.image_token)
        processor.save_pretrained(out)
        return out
    processor = hf_processor(
        module.tokenizer,
        hf_image_processor(module.image_data_config, image_aspect),
        patch_size=int(tower.model.patch_embed.patch_size[0]),
        select_strategy=config.vision_feature_select_strategy,
        num_prefix_tokens=tower.num_prefix_tokens,
        image_token=module.spec.image_token,
    )
    processor.save_pretrained(out)
    return out


def save_hf_model(module: Any, out: Path, family: str | None, dtype: torch.dtype | None) -> tuple[Any, nn.Module]:
    """Write a copy of ``module``'s network, LoRA merged, as transformers' model of ``family`` into ``out``.

    The config records our chat template by name (transformers keeps unknown config keys), so an import renders
    prompts as training did.

    Returns:
        (transformers' model, our merged copy of the network).
    """
    if module.network is None:
        raise RuntimeError("The network is not built yet: call configure_model() first.")
    network = copy.deepcopy(module.network).eval()
    merge_lora(network)
    model = to_hf_model(network, family)
    if dtype is not None:
        model = model.to(dtype)
    setattr(model.config, TEMPLATE_KEY, module.spec.template)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return model, network
