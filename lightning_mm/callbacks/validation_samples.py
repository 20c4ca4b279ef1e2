"""ValidationSamples: at each validation, a few held-out images with their prompt, generated answer and reference."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_mm.evaluation import sample_images

__all__ = ["ValidationSamples", "collapse_image_spans", "displayable_images", "format_sample"]


def displayable_images(pixels: torch.Tensor, mean: Any = None, std: Any = None) -> torch.Tensor:
    """(3, H, n * W) float image in [0, 1] of a sample's images side by side.

    Args:
        pixels: (n, 3, H, W) uint8 images, or images normalised with ``mean`` / ``std`` (undone here).
        mean: Per-channel mean of the normalisation (timm's data config).
        std: Per-channel std of the normalisation.
    """
    x = pixels.detach().float().cpu()  # (n, 3, H, W)
    if pixels.dtype == torch.uint8:
        x = x / 255.0
    elif mean is not None and std is not None:
        x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return torch.cat(list(x.clamp(0.0, 1.0)), dim=-1)  # (3, H, n * W)


def collapse_image_spans(ids: list[int], image_token_id: int) -> list[int]:
    """``ids`` with each run of image tokens shortened to one (a readable prompt: one placeholder per image)."""
    return [t for k, t in enumerate(ids) if t != image_token_id or k == 0 or ids[k - 1] != image_token_id]


def format_sample(prompt: str, prediction: str, references: list[str]) -> str:
    """Markdown of one sample: the prompt (as code, template markers and all), the answer and the reference(s)."""
    quoted = "\n".join("    " + line for line in prompt.splitlines() or [""])
    refs = " | ".join(f"`{r}`" for r in references)
    return f"prompt:\n\n{quoted}\n\ngenerated: `{prediction}`\n\nreference: {refs}"


class ValidationSamples(Callback):
    """At each validation, logs the first ``num_samples`` held-out samples of the first batch to TensorBoard.

    Per sample ``i``: the image(s) as ``val_samples/<i>/image`` and, as ``val_samples/<i>/text``, the prompt (image
    placeholders shown once per image), the greedy answer and the reference. The same samples are shown at every
    validation (the validation loader does not shuffle), so the answers can be followed through training. With
    ``eval_generate`` the module's answers are reused; otherwise only these samples are generated (a few ms).
    Nothing is logged during the sanity check or without a TensorBoard logger.

    Args:
        num_samples: Samples shown at each validation.
    """

    def __init__(self, num_samples: int = 4) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"ValidationSamples: num_samples must be at least 1, got {num_samples}")
        self.num_samples = num_samples

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or batch_idx != 0 or dataloader_idx != 0:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        rows = list(range(min(self.num_samples, batch["input_ids"].shape[0])))
        generated = outputs.get("generated") if isinstance(outputs, dict) else None
        if generated is None:  # every rank generates: sharded networks need all of them
            generated = pl_module.generate_answers(batch, rows=rows)
        if not trainer.is_global_zero:
            return
        self._log(trainer, pl_module, batch, generated, loggers)

    def _log(self, trainer: L.Trainer, pl_module: Any, batch: dict[str, Any], generated: dict, loggers: list) -> None:
        tokenizer = pl_module.tokenizer
        image_token_id = pl_module.image_token_id
        config = pl_module.image_data_config
        for i, b in enumerate(generated["rows"][: self.num_samples]):
            prompt = collapse_image_spans(generated["prompt_ids"][i], image_token_id)
            text = format_sample(
                tokenizer.decode(prompt, skip_special_tokens=False).strip(),
                generated["predictions"][i],
                generated["references"][i],
            )
            image = None
            pixels, _, _ = sample_images(batch, [b])  # (n_tiles, 3, H, W): every tile of the sample's images
            if pixels is not None:
                image = displayable_images(pixels, config.get("mean"), config.get("std"))
            for logger in loggers:
                logger.experiment.add_text(f"val_samples/{i}/text", text, global_step=trainer.global_step)
                if image is not None:
                    logger.experiment.add_image(f"val_samples/{i}/image", image, global_step=trainer.global_step)
