"""The two sides of the training-step benchmarks, one builder each, and the LLaVA-shaped batch they train on.

Both build the LLaVA-1.5 layout of ``_llava.py`` at benchmark size from configs (random init, nothing is downloaded)
and train it the way LLaVA-1.5's LoRA finetune does: frozen vision tower, fully trained projector, LoRA (``cfg.lora_r``,
``cfg.lora_alpha``, ``cfg.lora_dropout``) on every linear layer of the LLM's decoder (q/k/v/o/gate/up/down), frozen
embeddings and ``lm_head``.

* :func:`build_ours`: :class:`lightning_mm.MultimodalModule`; the placements are declared on the module and applied by
  its own ``configure_model`` (what the placement callbacks do in a Trainer), so the module records them as it would
  in training. Its step runs the module's seams: ``forward`` (hidden states) and ``compute_loss`` (``lm_head`` on the
  supervised rows only, chunked).
* :func:`build_hf`: transformers' ``LlavaForConditionalGeneration`` (CLIP tower, ``vision_feature_layer=-2``,
  ``"default"`` select strategy) + peft LoRA on its language model; the loss comes from ``labels`` (full
  ``(B, T, V)`` logits, then ``ForCausalLMLoss``).

A step (:meth:`TrainSide.step`) is forward + loss under CPU bf16 autocast when ``cfg.dtype == "bfloat16"``, backward,
and ``AdamW.step`` on the trainable parameters. ``cfg.activation_checkpointing`` recomputes the LLM decoder layers in
backward on both sides (LLaVA's finetune scripts set ``gradient_checkpointing``).

:class:`OursOptions` are optimisation proposals measured on ours as extra sides (``train_step.py --ours-variants``):
each names a change to ``lightning_mm`` (or undoes one) in the builder, never in the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from _llava import hf_llava_config, image_tokens, ours_overrides
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from transformers import LlavaForConditionalGeneration

from lightning_mm import MultimodalModule
from lightning_mm.models import decoder_of
from lightning_mm.models.compiled import compile_regions
from lightning_mm.placement import DropoutLinear, Placement, lora_layers
from lightning_mm.zoo import get_spec, load_tokenizer

__all__ = ["LORA_TARGETS", "OursOptions", "TrainSide", "build_hf", "build_ours", "image_token_id", "make_batch"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class OursOptions:
    """Variants of ours (``--ours-variants``: ``+``-joined option names with ``-`` for ``_``, e.g. ``peft-dropout``).

    Attributes:
        ac: Activation checkpointing on ours only.
        peft_dropout: peft's own LoRA dropout (``nn.Dropout`` before ``lora_A``: a float mask and the dropped copy of
            the input kept for backward) instead of lightning_mm's fused ``DropoutLinear`` (the input and a bool mask).
        fused_adamw: ``torch.optim.AdamW(fused=True)``.
        frozen_bf16: Frozen Linear/Conv layers stored in bfloat16 (with ``--dtype bfloat16``), so autocast no longer
            casts their weights on every forward and recompute; norms and embeddings stay float32.
        compile: Each vision block and LLM decoder layer compiled in place (``MultimodalModule(compile=True)``'s
            :func:`~lightning_mm.models.compiled.compile_regions`, static shapes); the first step pays the compilation.
    """

    ac: bool = False
    peft_dropout: bool = False
    fused_adamw: bool = False
    frozen_bf16: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, variant: str) -> OursOptions:
        """``"peft-dropout+fused-adamw"`` -> the options; raises ValueError naming an unknown option."""
        names = set(cls.names())
        chosen = set(filter(None, variant.split("+")))
        if chosen - names:
            raise ValueError(f"unknown option(s) {sorted(chosen - names)} in {variant!r}; known: {sorted(names)}")
        return cls(**{name.replace("-", "_"): True for name in chosen})

    @classmethod
    def names(cls) -> list[str]:
        """The option names as ``--ours-variants`` spells them."""
        return [f.name.replace("_", "-") for f in dataclasses.fields(cls)]


@dataclass
class TrainSide:
    """One side, built: its model, optimiser, loss function, timed parts (vision / projector / llm) and dtype."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    forward_loss: Callable[[dict], torch.Tensor]
    parts: dict[str, nn.Module]
    dtype: str

    def autocast(self) -> AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")

    def step(self, batch: dict) -> dict[str, float]:
        """One training step; returns its loss and the times it passed forward+loss, backward and the optimiser."""
        marks = {"start": time.perf_counter()}
        with self.autocast(), torch.profiler.record_function("## forward + loss ##"):
            loss = self.forward_loss(batch)
        marks["loss_end"] = time.perf_counter()
        with torch.profiler.record_function("## backward ##"):
            loss.backward()
        marks["backward_end"] = time.perf_counter()
        with torch.profiler.record_function("## optimizer ##"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        marks["end"] = time.perf_counter()
        return {"loss": float(loss.detach()), **marks}


def image_token_id() -> int:
    """The image-token id ours gets from its tokenizer; the transformers side is configured with the same id."""
    spec = get_spec("tiny")
    return int(load_tokenizer(spec).convert_tokens_to_ids(spec.image_token))


def make_batch(cfg: argparse.Namespace, image_token: int, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """LLaVA-shaped batch: prompt, image tokens, question, answer; only the answer (``cfg.answer_tokens``) is supervised."""
    gen = torch.Generator().manual_seed(cfg.seed)
    b, n_img = batch_size or cfg.batch, image_tokens(cfg)
    seq = n_img + cfg.text_tokens
    low = image_token + 1  # text ids above the image id (the synthetic tokenizer's specials are below it)
    input_ids = torch.randint(low, cfg.vocab, (b, seq), generator=gen)  # (B, T)
    input_ids[:, cfg.prompt_tokens : cfg.prompt_tokens + n_img] = image_token
    labels = torch.full((b, seq), -100, dtype=torch.long)  # (B, T)
    labels[:, -cfg.answer_tokens :] = input_ids[:, -cfg.answer_tokens :]
    pixel_values = torch.randn(b, 3, cfg.image_size, cfg.image_size, generator=gen)  # (B, 3, S, S)
    attention_mask = torch.ones(b, seq, dtype=torch.long)  # (B, T)
    return {"input_ids": input_ids, "labels": labels, "pixel_values": pixel_values, "attention_mask": attention_mask}


def llava_lora_placements(cfg: argparse.Namespace) -> dict[str, Placement]:
    """LLaVA-1.5's LoRA finetune: frozen tower, full projector, LoRA on the LLM's decoder linears."""
    lora = Placement("lora", cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, target_modules=LORA_TARGETS)
    return {"vision": Placement("frozen"), "projector": Placement("full"), "llm": lora}


def _unfuse_lora_dropout(root: nn.Module) -> None:
    """Put peft's ``nn.Dropout`` + ``nn.Linear`` back where lightning_mm fused them into ``DropoutLinear``."""
    for layer in lora_layers(root).values():
        for name, lora_a in list(layer.lora_A.items()):
            if isinstance(lora_a, DropoutLinear):
                plain = nn.Linear(lora_a.in_features, lora_a.out_features, bias=False, device="meta")
                plain.weight = lora_a.weight
                layer.lora_A[name] = plain
                layer.lora_dropout[name] = nn.Dropout(lora_a.p)


def build_ours(cfg: argparse.Namespace, options: OursOptions | None = None, name: str = "ours") -> TrainSide:
    """``MultimodalModule`` at benchmark size with LLaVA's LoRA-finetune placement (and the variant's ``options``)."""
    options = options or OursOptions()
    torch.manual_seed(cfg.seed)
    module = MultimodalModule(
        model="tiny",
        model_overrides=ours_overrides(cfg),
        optimizer=lambda params: torch.optim.AdamW(params, lr=cfg.lr, fused=options.fused_adamw or None),
        activation_checkpointing=cfg.activation_checkpointing or options.ac,
    )
    for component, placement in llava_lora_placements(cfg).items():
        module.set_placement(component, placement)  # applied by configure_model, as in a Trainer
    module.configure_model()
    net = module.network
    if options.peft_dropout:
        _unfuse_lora_dropout(net.llm)
    if options.frozen_bf16:
        for mod in net.modules():
            if isinstance(mod, nn.Linear | nn.Conv2d) and not any(p.requires_grad for p in mod.parameters()):
                mod.to(torch.bfloat16)
    if options.compile:
        compile_regions(net, dynamic=False)  # after every change to the modules, as configure_model does
    optimizer = module.optimizer_factory(module.param_groups())
    module.train()

    def forward_loss(batch: dict) -> torch.Tensor:
        hidden = module(batch)  # (B, T, H)
        loss_sum, n_items = module.compute_loss(hidden, batch["labels"])
        return loss_sum / n_items.clamp(min=1)

    parts = {"vision": net.vision, "projector": net.projector, "llm": decoder_of(net.llm)}
    return TrainSide(name, module, optimizer, forward_loss, parts, cfg.dtype)


def build_hf(cfg: argparse.Namespace, image_token: int, name: str = "hf") -> TrainSide:
    """transformers' ``LlavaForConditionalGeneration`` at benchmark size + peft LoRA on its language model."""
    torch.manual_seed(cfg.seed)
    model = LlavaForConditionalGeneration._from_config(hf_llava_config(cfg, image_token), attn_implementation="sdpa")
    targets = r".*language_model\..*\.(" + "|".join(LORA_TARGETS) + ")"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets)
    inject_adapter_in_model(lora, model)
    if cfg.activation_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    for pname, p in model.named_parameters():
        if ".vision_tower." in pname:
            p.requires_grad_(False)
        elif ".multi_modal_projector." in pname:
            p.requires_grad_(True)
        else:
            p.requires_grad_(".lora_" in pname)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    model.train()

    def forward_loss(batch: dict) -> torch.Tensor:
        keys = ("input_ids", "pixel_values", "attention_mask", "labels")
        return model(**{k: batch[k] for k in keys}).loss

    inner = model.model
    parts = {"vision": inner.vision_tower, "projector": inner.multi_modal_projector, "llm": inner.language_model}
    return TrainSide(name, model, optimizer, forward_loss, parts, cfg.dtype)
