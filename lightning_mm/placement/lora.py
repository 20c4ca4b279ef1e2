"""LoRA on one component: target resolution scoped to the component, peft injection, and merging.

Targets are always resolved on the component's own module (``network.vision``, ``network.projector``,
``network.llm``) and handed to peft as an exact list of module paths relative to that component, so a name shared
across components (``fc1``, ``q_proj``, ``proj``) never puts an adapter into another component.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers.pytorch_utils import Conv1D

from lightning_mm.errors import ConfigError, close_matches
from lightning_mm.models.component import ALL_LINEAR, DEFAULT_LORA_TARGETS, as_component
from lightning_mm.placement.lora_dropout import DropoutLinear
from lightning_mm.placement.quantize import dequantize

__all__ = [
    "ADAPTER_NAME",
    "DEFAULT_TARGETS",
    "adapter_settings",
    "fuse_lora_dropout",
    "inject_lora",
    "is_lora_parameter",
    "lora_layers",
    "merge_lora",
    "resolve_lora_targets",
]

ADAPTER_NAME = "default"
REGEX_PREFIX = "re:"

# Default targets of the built-in components, by name; a component's own are its interface's ``lora_targets()``.
DEFAULT_TARGETS = DEFAULT_LORA_TARGETS
_LINEAR_TYPES = (nn.Linear, Conv1D)


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter (``...qkv.lora_A.default.weight``)."""
    return any(part.startswith("lora_") for part in name.split("."))


def lora_layers(module: nn.Module) -> dict[str, LoraLayer]:
    """The peft LoRA layers inside ``module``, by path relative to it."""
    return {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def _output_embeddings(module: nn.Module) -> nn.Module | None:
    get = getattr(module, "get_output_embeddings", None)
    return get() if callable(get) else None


def _matches(name: str, layer: nn.Module, target: str, lm_head: nn.Module | None) -> bool:
    if target.startswith(REGEX_PREFIX):  # any layer type peft supports
        return re.fullmatch(target[len(REGEX_PREFIX) :], name) is not None
    if not isinstance(layer, _LINEAR_TYPES):  # names select linear layers: `proj` is not timm's patch_embed.proj conv
        return False
    if target == ALL_LINEAR:
        return layer is not lm_head
    return name == target or name.endswith("." + target)


def _layers(module: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    """(path, layer) of every submodule; a peft LoRA layer stands for its base layer and hides its own children."""
    inside = None  # path of the LoRA layer whose children are being skipped (named_modules is depth-first)
    for name, layer in module.named_modules():
        if not name or (inside is not None and name.startswith(inside)):
            continue
        inside = None
        if isinstance(layer, LoraLayer):
            inside = name + "."
            layer = layer.get_base_layer()
        yield name, layer


def resolve_lora_targets(
    module: nn.Module,
    component: str,
    target_modules: Sequence[str] | None = None,
    unused_parameters: Iterable[str] = (),
) -> list[str]:
    """Paths (relative to ``module``) of the layers that get a LoRA adapter.

    Args:
        module: The component's own module.
        component: ``vision``, ``projector`` or ``llm`` (names it in errors; with the module, chooses its interface).
        target_modules: Each entry matches module paths relative to the component: a name or dotted suffix
            (``qkv``, ``attn.proj``) or ``all-linear`` selects linear layers (so ``proj`` never selects timm's
            ``patch_embed.proj`` convolution); ``re:<regex>``, matched against the whole relative path, selects any
            layer type peft supports (``re:.*patch_embed\\.proj``). None: the component's defaults, its interface's
            ``lora_targets()`` (:mod:`lightning_mm.models.component`).
        unused_parameters: Parameter names (relative to ``module``) that never take part in ``forward``; the layers
            that own them get no adapter (it would never receive a gradient).

    Returns:
        The sorted module paths.

    Raises:
        ConfigError: if nothing matches, or (for a given ``target_modules``) an entry matches no layer: the message
            lists the unmatched entries with close candidates (a ``ValueError``).
    """
    defaults = target_modules is None
    targets = tuple(as_component(module, component).lora_targets() if defaults else target_modules)
    unused_owners = {p.rsplit(".", 1)[0] for p in unused_parameters}
    lm_head = _output_embeddings(module)
    if isinstance(lm_head, LoraLayer):
        lm_head = lm_head.get_base_layer()
    found, matched = [], set()
    for name, layer in _layers(module):
        if name in unused_owners:
            continue
        hits = {t for t in targets if _matches(name, layer, t, lm_head)}
        if hits:
            found.append(name)
            matched |= hits
    if not defaults:  # a given list must match entry by entry (the defaults cover several families)
        unmatched = [t for t in targets if t not in matched]
        if unmatched:
            raise ConfigError(_unmatched_message(module, component, targets, unmatched, unused_owners))
    if not found:
        linear = [n for n, m in module.named_modules() if isinstance(m, _LINEAR_TYPES)][:12]
        raise ConfigError(
            f"No layer of the {component} matches the LoRA targets {list(targets)}. "
            f"Some of its linear layers: {', '.join(linear) or '(none)'}."
        )
    return sorted(found)


def _unmatched_message(
    module: nn.Module, component: str, targets: Sequence[str], unmatched: list[str], unused_owners: set[str]
) -> str:
    """One paragraph: the LoRA targets that match no layer of the component, with close candidates."""
    linear = [n for n, layer in _layers(module) if isinstance(layer, _LINEAR_TYPES)]
    candidates = {part for n in linear for part in _suffixes(n)}
    parts = []
    for t in unmatched:
        name = t[len(REGEX_PREFIX) :] if t.startswith(REGEX_PREFIX) else t
        close = close_matches(name, candidates)
        only_unused = any(_suffix_match(n, name) for n in unused_owners)
        why = " (only layers that never run)" if only_unused else ""
        parts.append(f"{t!r}{why}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""))
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
    one = len(unmatched) == 1
    return (
        f"No layer of the {component} matches the LoRA target{'' if one else 's'} {', '.join(parts)} of "
        f"target_modules {list(targets)}: {'it' if one else 'they'} would train nothing. Targets are layer names or "
        f"dotted suffixes of paths inside the {component} (`all-linear`, or `re:<regex>` on the whole path); its "
        f"linear layers are named {', '.join(leaves[:16]) or '(none)'}."
    )


def _suffixes(path: str) -> list[str]:
    """``a.b.c`` -> ``c``, ``b.c``, ``a.b.c``."""
    parts = path.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _suffix_match(path: str, target: str) -> bool:
    return path == target or path.endswith("." + target)


def inject_lora(
    module: nn.Module,
    targets: Sequence[str],
    r: int,
    alpha: float,
    dropout: float,
) -> None:
    """Add peft LoRA layers to exactly the ``targets`` of ``module`` (in place).

    Args:
        module: The component's own module.
        targets: Module paths relative to ``module`` (from :func:`resolve_lora_targets`).
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the LoRA branch input; on linear layers it is fused into ``lora_A``
            (:func:`fuse_lora_dropout`).
    """
    pattern = "^(?:" + "|".join(re.escape(t) for t in targets) + ")$"  # peft full-matches a str against each path
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    inject_adapter_in_model(config, module, adapter_name=ADAPTER_NAME)
    fuse_lora_dropout(module)


def fuse_lora_dropout(module: nn.Module) -> int:
    """Fuse peft's LoRA input dropout into ``lora_A`` wherever both are plain layers (in place).

    ``lora_A`` becomes a :class:`~lightning_mm.placement.lora_dropout.DropoutLinear` sharing the same weight, and
    ``lora_dropout`` becomes ``nn.Identity``: the same computation, with backward keeping the layer's input and a
    1-byte mask instead of a float mask and a dropped copy per adapter. Parameter names do not change. Layers without
    dropout, or whose ``lora_A`` is not a bias-free ``nn.Linear`` (convolutions), are left as peft made them.

    Returns:
        The number of adapters fused.
    """
    fused = 0
    for layer in lora_layers(module).values():
        for name, drop in list(layer.lora_dropout.items()):
            lora_a = layer.lora_A[name]
            if type(drop) is not nn.Dropout or type(lora_a) is not nn.Linear or lora_a.bias is not None:
                continue
            layer.lora_A[name] = DropoutLinear.from_linear(lora_a, drop.p)
            layer.lora_dropout[name] = nn.Identity()
            fused += 1
    return fused


def adapter_settings(layer: LoraLayer) -> tuple[int, float]:
    """(rank, alpha) of the default adapter of a peft LoRA layer."""
    return int(layer.r[ADAPTER_NAME]), float(layer.lora_alpha[ADAPTER_NAME])


def _full_precision(module: nn.Module) -> None:
    """Bring frozen weights stored below float32 (bitsandbytes layers, bf16 storage) to float32, in place.

    Only where the module mixes dtypes (a frozen base in the compute dtype beside float32 adapters, or quantised
    layers): a module trained all in one dtype (``bf16-true``) is left as it is.
    """
    dequantize(module, torch.float32)
    dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()}
    if len(dtypes) > 1 and torch.float32 in dtypes:
        for p in module.parameters():
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()


def merge_lora(module: nn.Module) -> int:
    """Merge every LoRA adapter inside ``module`` into its base layer and remove the adapter layers (in place).

    The frozen base is first brought to float32 where it was stored below the adapters' precision: bitsandbytes
    layers are dequantised into plain ``nn.Linear`` (a merge into 4-bit weights would quantise the sum again) and
    bf16-stored weights are upcast, so the merge adds the adapters' update in float32 and the module comes out in one
    dtype (an export then writes the dtype asked for).

    Returns:
        The number of layers merged.
    """
    _full_precision(module)
    layers = lora_layers(module)
    for name, layer in layers.items():
        layer.merge(safe_merge=True)
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, layer.get_base_layer())
    for sub in module.modules():
        if "peft_config" in vars(sub):
            del sub.peft_config
    return len(layers)
