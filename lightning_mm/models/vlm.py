"""VisionLanguageModel: vision tower -> projector -> splice into the LM's input embeddings -> LM decoder."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from transformers import PreTrainedModel

from lightning_mm.loss import linear_cross_entropy, shift_labels
from lightning_mm.models.attention_pattern import CAUSAL, AttentionPattern, attention_masks
from lightning_mm.models.component import COMPONENTS, Component, as_component, check_component, checkpoint_activations
from lightning_mm.models.language import decoder_of
from lightning_mm.models.vision import VisionTower

__all__ = ["VisionLanguageModel", "checkpoint_activations", "splice_image_features"]


def _first_mismatch(token_counts: torch.Tensor, feature_rows: int, tokens_per_image: int | None) -> int:
    """Index of the first sample whose image tokens cannot be matched with the given features."""
    counts = token_counts.tolist()
    if tokens_per_image:
        for b, c in enumerate(counts):
            if c % tokens_per_image:
                return b
    used = 0
    for b, c in enumerate(counts):
        used += c
        if used > feature_rows:
            return b
    return len(counts) - 1  # every sample fits, so the features left over belong after the last one


def splice_image_features(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_features: torch.Tensor,
    image_token_id: int,
) -> torch.Tensor:
    """Write image features into the embedding rows of the image tokens, in order.

    Args:
        inputs_embeds: (B, T, D) text embeddings.
        input_ids: (B, T) token ids; positions equal to ``image_token_id`` receive image features.
        image_features: (..., D) features, any leading shape; flattened to (N, D) in row-major order. With a
            (n_images, tokens_per_image, D) tensor, a sample whose token count is not a multiple of tokens_per_image
            is reported as the culprit.
        image_token_id: Id of the image placeholder token.

    Returns:
        (B, T, D) embeddings: a new tensor, gradients flow into both inputs.

    Raises:
        ValueError: if the number of image tokens differs from the number of feature rows, naming the first
            sample index whose count does not match.
    """
    if inputs_embeds.shape[:2] != input_ids.shape:
        raise ValueError(
            f"inputs_embeds {tuple(inputs_embeds.shape)} does not match input_ids {tuple(input_ids.shape)}"
        )
    dim = inputs_embeds.shape[-1]
    if image_features.shape[-1] != dim:
        raise ValueError(f"image features have width {image_features.shape[-1]}, the LM embeddings {dim}")
    mask = input_ids == image_token_id  # (B, T)
    feats = image_features.reshape(-1, dim)  # (N, D)
    token_counts = mask.sum(dim=1)  # (B,)
    n_tokens = int(token_counts.sum())
    if n_tokens != feats.shape[0]:
        per_image = image_features.shape[-2] if image_features.dim() >= 3 else None
        b = _first_mismatch(token_counts, feats.shape[0], per_image)
        raise ValueError(
            f"Image token count does not match the image features: the batch holds {n_tokens} image tokens "
            f"(per sample: {token_counts.tolist()}) but {feats.shape[0]} feature rows were given"
            + (f" ({image_features.shape[0]} images x {per_image} tokens)" if per_image else "")
            + f"; first mismatching sample: index {b}."
        )
    return inputs_embeds.masked_scatter(mask.unsqueeze(-1), feats.to(inputs_embeds.dtype))  # (B, T, D)


class VisionLanguageModel(nn.Module):
    """LLaVA-style network in plain torch: ``vision`` -> ``projector`` -> splice -> ``llm`` decoder.

    ``forward`` returns the decoder's final hidden states; the output projection (``lm_head``) is applied by the loss on
    the supervised rows only, so no (B, T, V) logits tensor is built during training.

    Args:
        vision: The vision tower.
        projector: Maps (N_img, L, D_v) to (N_img, L', D_t).
        llm: A transformers causal LM.
        image_token_id: Id of the image placeholder token in ``input_ids``.
        attention_pattern: The LM's attention pattern (causal, bidirectional image blocks, prefix LM), set by the
            family (:mod:`lightning_mm.models.attention_pattern`); None: causal.
    """

    def __init__(
        self,
        vision: VisionTower,
        projector: nn.Module,
        llm: PreTrainedModel,
        image_token_id: int,
        attention_pattern: AttentionPattern | None = None,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.llm = llm
        self.image_token_id = image_token_id
        self.attention_pattern = attention_pattern or CAUSAL

    @property
    def lm_head(self) -> nn.Module:
        """The LM's output projection (V, H)."""
        return self.llm.get_output_embeddings()

    def component(self, name: str) -> Component:
        """The interface of component ``name``: its blocks, unused parameters, LoRA targets, sharding units.

        Args:
            name: ``vision``, ``projector`` or ``llm``.

        Returns:
            A :class:`~lightning_mm.models.component.Component` (its ``module`` is ``getattr(self, name)``).
        """
        check_component(name)
        return as_component(getattr(self, name), name)

    def enable_activation_checkpointing(self) -> None:
        """Non-reentrant activation checkpointing of each component's checkpointing units.

        The vision tower's blocks and the LLM's decoder layers (a projector has none). Only active in training mode
        with grad enabled; a tower that runs under ``no_grad`` keeps nothing anyway.
        """
        for name in COMPONENTS:
            self.component(name).enable_activation_checkpointing()

    def _vision_trains(self) -> bool:
        return any(p.requires_grad for p in self.vision.parameters())

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        tiles_per_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vision tower + projector.

        A tower with no trainable parameter runs under ``no_grad`` (no activations are kept for it); the projector's
        input dtype follows the projector's weights. A projector with an ``assemble`` method (any-resolution tiling,
        a family's tiling projector) turns the tiles' features into each image's
        tokens.

        Args:
            pixel_values: (N_tiles, 3, H, W) uint8 (the tower normalises them) or normalised floats; one tile per
                image for fixed-layout models.
            image_sizes: (N_images, 2) original (height, width) of each image (read by tiling projectors only).
            tiles_per_image: (N_images,) tiles of each image, in order (read by tiling projectors only).

        Returns:
            (N_img, L, D_t) image tokens in the LM's embedding space; (total_image_tokens, D_t) with tiling.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._vision_trains()):
            feats = self.vision(pixel_values)  # (N_tiles, L, D_v)
        proj_dtype = next(self.projector.parameters()).dtype
        tokens = self.projector(feats.to(proj_dtype))  # (N_tiles, L, D_t)
        assemble = getattr(self.projector, "assemble", None)
        return tokens if assemble is None else assemble(tokens, image_sizes, tiles_per_image)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        tiles_per_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text embeddings with the image features spliced in at the image-token positions.

        A batch without images still runs the tower and projector, on one zero image whose output is added with weight
        0, whenever :meth:`runs_vision_without_images` says so (training, or several processes): data-parallel ranks
        then run the same collectives (FSDP all-gathers, DDP's gradient reduction of the projector) whatever their
        batches hold, and the embeddings are exactly those of the text.

        Args:
            input_ids: (B, T).
            pixel_values: (N_img, 3, H, W) for all images of the batch in order, or None for text only: uint8
                (normalised on the device by the tower, in its dtype) or already normalised floats (cast to it).
            image_sizes: (N_img, 2) original (height, width) of each image, for tiling projectors.
            tiles_per_image: (N_img,) tiles of each image, for tiling projectors.

        Returns:
            (B, T, D_t) input embeddings.
        """
        image_mask = input_ids == self.image_token_id  # (B, T)
        # the placeholder id need not be a row of the embedding table (LLaVA's original code uses -200)
        text_ids = input_ids.masked_fill(image_mask, 0)
        embeds = self.llm.get_input_embeddings()(text_ids)  # (B, T, D_t)
        if pixel_values is None or pixel_values.shape[0] == 0:
            if bool(image_mask.any()):
                first = int(image_mask.any(dim=1).nonzero()[0])
                raise ValueError(f"Sample {first} holds image tokens but the batch has no pixel_values.")
            if not self.runs_vision_without_images():
                return embeds
            features = self.encode_images(self.dummy_images(embeds.device))  # (1, L, D_t)
            # weight 0: the embeddings do not change, but the tower and projector ran (collectives) and every projector
            # parameter is in the graph (a zero gradient, reduced like any other)
            return embeds + (features * 0).sum().to(embeds.dtype)  # (B, T, D_t)
        if pixel_values.is_floating_point():
            pixel_values = pixel_values.to(self.vision_dtype)  # uint8 images are normalised by the tower
        features = self.encode_images(pixel_values, image_sizes, tiles_per_image)  # (N_img, L, D_t) or (N, D_t)
        return splice_image_features(embeds, input_ids, features, self.image_token_id)

    def runs_vision_without_images(self) -> bool:
        """Whether a batch without images still runs the tower and projector (on a zero image, weight 0).

        True in training mode with grad enabled (so one process and several see the same graph: the projector gets a
        zero gradient, not none) and whenever several processes run (sharded evaluation and generation gather the
        vision units too); single-process evaluation skips it.
        """
        if self.training and torch.is_grad_enabled():
            return True
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def dummy_images(self, device: torch.device) -> torch.Tensor:
        """(1, 3, H, W) zero image, already normalised (the mean colour), in the tower's dtype and input size."""
        size = getattr(self, "_dummy_image_size", None)
        if size is None:
            size = self._dummy_image_size = tuple(self.vision.data_config()["input_size"])  # (3, H, W)
        return torch.zeros(1, *size, dtype=self.vision_dtype, device=device)  # (1, 3, H, W)

    @property
    def vision_dtype(self) -> torch.dtype:
        """Parameter dtype of the vision tower (images are cast, or normalised, to it)."""
        return next(self.vision.parameters()).dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        tiles_per_image: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states of the LM decoder.

        Args:
            input_ids: (B, T).
            attention_mask: (B, T), 1 for real tokens.
            pixel_values: (N_img, 3, H, W) uint8 or normalised floats, or None.
            image_sizes: (N_img, 2) original (height, width) of each image, for tiling projectors.
            tiles_per_image: (N_img,) tiles of each image, for tiling projectors.
            position_ids: (B, T) packed rows (:mod:`lightning_mm.data.packing`): positions restarting at 0 for each
                sample, padding only at the end of a row as a run of its own. The decoder then gets them instead of
                ``attention_mask``, and transformers confines attention to each run of consecutive positions.
            prefix_mask: (B, T) True on each sample's prefix, for a prefix-LM attention pattern (ignored otherwise).

        Returns:
            (B, T, H) hidden states after the decoder's final norm.
        """
        embeds = self.embed(input_ids, pixel_values, image_sizes, tiles_per_image)  # (B, T, D_t)
        mask = attention_mask if position_ids is None else None  # packed rows are detected without a 2-D mask
        blocks = self.attention_pattern.block_ids(input_ids, self.image_token_id, prefix_mask)  # (B, T) or None
        if blocks is not None:  # built once for every layer (and reused by activation-checkpointing recomputes)
            mask = attention_masks(self.llm.config, embeds, mask, position_ids, blocks)
        out = decoder_of(self.llm)(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False
        )
        return out.last_hidden_state  # (B, T, H)

    # The two methods below read ``lm_head`` outside ``forward``: FSDP2 runs them as forward methods of the root (see
    # ``lightning_mm.distributed.fully_shard_network``), so its weight is whole while they run.
    def lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
        """Shifted cross-entropy summed over the supervised targets, ``lm_head`` applied to those rows only.

        Args:
            hidden: (B, T, H) final hidden states (``forward``'s output).
            labels: (B, T), -100 where nothing is supervised.
            chunk_size: Rows of the output projection computed at once.

        Returns:
            0-dim loss sum (divide by :func:`~lightning_mm.loss.count_supervised` for the mean).
        """
        head = self.lm_head
        return linear_cross_entropy(
            hidden, head.weight, labels, bias=head.bias, num_items=1, chunk_size=chunk_size, softcap=self.logit_softcap
        )

    @property
    def logit_softcap(self) -> float | None:
        """The LM's final logit soft-capping (``cap * tanh(logits / cap)``, the config's
        ``final_logit_softcapping``), or None."""
        cap = getattr(self.llm.config.get_text_config(), "final_logit_softcapping", None)
        return float(cap) if cap else None

    def target_predictions(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Argmax predictions at the supervised targets, under teacher forcing.

        Returns:
            (N,) predicted ids and (N,) sample index of each supervised target (row-major order).
        """
        rows = (shift_labels(labels) != -100).nonzero(as_tuple=True)  # ((N,), (N,))
        return self.lm_head(hidden[rows]).argmax(dim=-1), rows[0]

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        image_sizes: torch.Tensor | None = None,
        tiles_per_image: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Greedy (by default) generation from left-padded prompts.

        Args:
            input_ids: (B, T) left-padded prompts.
            attention_mask: (B, T).
            pixel_values: (N_img, 3, H, W) uint8 or normalised floats, or None.
            max_new_tokens: Generation budget.
            image_sizes: (N_img, 2) original (height, width) of each image, for tiling projectors.
            tiles_per_image: (N_img,) tiles of each image, for tiling projectors.
            **generate_kwargs: Passed to transformers' ``generate`` (``eos_token_id``, ``pad_token_id``, ...).

        With a non-causal attention pattern the prompt is all prefix (a prefix LM) and its image blocks see
        themselves whole: the prompt's masks are built for the prefill step (:meth:`_prefill_masks`), the new tokens
        attend causally through the KV cache.

        Returns:
            (B, T_new) generated token ids (the prompt excluded).
        """
        embeds = self.embed(input_ids, pixel_values, image_sizes, tiles_per_image)
        generate_kwargs.setdefault("do_sample", False)
        # the prompt is all prefix, its left padding included (masked as keys, the padding queries then see the
        # prompt instead of nothing, as in transformers' prefix-LM models)
        prompt = torch.ones_like(input_ids, dtype=torch.bool)  # (B, T)
        blocks = self.attention_pattern.block_ids(input_ids, self.image_token_id, prompt)  # (B, T)
        hook = None
        if blocks is not None:
            generate_kwargs.setdefault("cache_implementation", "dynamic")  # a static cache would pre-build causal masks
            hook = decoder_of(self.llm).register_forward_pre_hook(self._prefill_masks(blocks), with_kwargs=True)
        try:
            return self.llm.generate(
                inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens, **generate_kwargs
            )
        finally:
            if hook is not None:
                hook.remove()

    def _prefill_masks(self, blocks: torch.Tensor):
        """A forward pre-hook of the decoder that gives the prefill step (the whole prompt, (B, T) ``blocks``) the
        attention pattern's masks; the decoding steps keep the causal masks the decoder builds."""

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            embeds, mask = kwargs.get("inputs_embeds"), kwargs.get("attention_mask")
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            prefill = embeds is not None and embeds.shape[1] == blocks.shape[1]
            if not prefill or (cache is not None and cache.get_seq_length() > 0) or isinstance(mask, dict):
                return None
            position_ids = kwargs.get("position_ids")
            kwargs["attention_mask"] = attention_masks(self.llm.config, embeds, mask, position_ids, blocks, cache)
            return args, kwargs

        return hook
