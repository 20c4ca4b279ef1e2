"""The checks of one encoded sample: its image-token count, and truncation that never cuts an image span.

Pure functions of the encoded sample (:class:`~lightning_mm.data.segments.Encoded`); a bad sample raises
:class:`~lightning_mm.data.llava_records.BadSampleError`, one that cannot fit :class:`SampleDropped`, both naming ``at``.
"""

from __future__ import annotations

from lightning_mm.data.llava_records import BadSampleError, SampleDropped
from lightning_mm.data.segments import IGNORE_INDEX, Encoded

__all__ = ["check_image_tokens", "truncate"]


def check_image_tokens(enc: Encoded, prompts: list[list[int]], image_token_id: int | None, at: str) -> None:
    """Raise ``image_count_mismatch`` unless ``enc`` holds exactly the image tokens of the images' ``prompts``."""
    n_tokens = enc.input_ids.count(image_token_id)
    per_image = [p.count(image_token_id) for p in prompts]
    if n_tokens != sum(per_image):
        raise BadSampleError(
            "image_count_mismatch",
            f"{at}: {n_tokens} image tokens for {len(prompts)} image(s) of {per_image} tokens "
            "(does the text contain the image token itself?)",
        )


def truncate(enc: Encoded, max_length: int | None, generation: bool, at: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` cut to ``max_length``; raises :class:`SampleDropped` when that cannot be done (a
    generation prompt too long, a cut inside an image span, no answer token left)."""
    ids, labels = enc.input_ids, enc.labels
    cut = max_length
    if cut is None or len(ids) <= cut:
        return ids, labels
    if generation:
        raise SampleDropped("prompt_too_long", f"{at}: prompt of {len(ids)} tokens > max_length={cut}")
    if any(end > cut for _, end in enc.image_spans):  # a cut inside an image span, or an image left out
        raise SampleDropped(
            "truncated_image_span", f"{at}: {len(ids)} tokens; max_length={cut} would cut an image span"
        )
    ids, labels = ids[:cut], labels[:cut]
    if all(x == IGNORE_INDEX for x in labels[1:]):
        raise SampleDropped("truncated_no_targets", f"{at}: no answer token left within max_length={cut}")
    return ids, labels
