"""Image loading and preprocessing with timm's own data config for the vision tower, plus LLaVA's aspect modes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform

__all__ = ["ASPECT_MODES", "ImageLoadError", "ImageProcessor"]

#: How an image whose aspect ratio differs from the tower's input is fitted:
#: ``pad``: pad to the input's aspect ratio with the mean colour, then resize (LLaVA-1.5 finetune, "expand to square");
#: ``resize``: resize to the input size, distorting the aspect ratio;
#: ``crop``: timm's evaluation transform of the tower as configured (resize the short side, centre crop).
ASPECT_MODES = ("pad", "resize", "crop")

# aspect mode -> (timm eval crop_mode, crop_pct override; None keeps the tower's own)
_TIMM_CROP = {"pad": ("border", 1.0), "resize": ("squash", 1.0), "crop": (None, None)}


class ImageLoadError(OSError):
    """An image file is missing or cannot be decoded.

    Attributes:
        reason: ``image_missing`` or ``image_unreadable``.
        path: The file.
    """

    def __init__(self, reason: str, path: str, detail: str) -> None:
        super().__init__(f"{reason.replace('_', ' ')}: {path!r} ({detail})")
        self.reason = reason
        self.path = path


class ImageProcessor:
    """Loads images and resizes them to the vision tower's input, as uint8 (or normalised float) tensors.

    By default the output is the resized image as (3, H, W) ``uint8``, timm's ``use_prefetcher`` transform: a quarter
    of the bytes of float32 to pass from DataLoader workers and to copy to the accelerator, and no per-pixel float work
    on the CPU. :class:`~lightning_mm.models.VisionTower` normalises uint8 input on the device with the same mean and
    std (the tower's timm data config). With ``normalize=True`` the output is timm's full evaluation transform instead:
    (3, H, W) ``float32``, scaled to [0, 1] and normalised with ``mean``/``std`` here, e.g. for a model that expects
    normalised input; the tower uses float input as is.

    Args:
        data_config: timm data config of the tower (``timm.data.resolve_model_data_config``): ``input_size``,
            ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``.
        aspect: One of :data:`ASPECT_MODES`.
        normalize: Return normalised float32 tensors instead of uint8 ones.
    """

    def __init__(self, data_config: dict[str, Any], aspect: str = "pad", normalize: bool = False) -> None:
        if aspect not in ASPECT_MODES:
            raise ValueError(f"aspect must be one of {ASPECT_MODES}, got {aspect!r}")
        missing = {"input_size", "mean", "std"} - set(data_config)
        if missing:
            raise ValueError(f"image data config lacks {sorted(missing)}; got keys {sorted(data_config)}")
        self.data_config = dict(data_config)
        self.aspect = aspect
        self.normalize = normalize
        crop_mode, crop_pct = _TIMM_CROP[aspect]
        self.transform = create_transform(
            input_size=tuple(data_config["input_size"]),
            is_training=False,
            interpolation=data_config.get("interpolation", "bicubic"),
            mean=tuple(data_config["mean"]),
            std=tuple(data_config["std"]),
            crop_pct=crop_pct if crop_pct is not None else data_config.get("crop_pct"),
            crop_mode=crop_mode if crop_mode is not None else data_config.get("crop_mode"),
            use_prefetcher=not normalize,  # ends with the uint8 image (no ToTensor scaling, no Normalize)
        )

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(3, H, W) of the tensors produced."""
        return tuple(self.data_config["input_size"])

    @staticmethod
    def load(path: str) -> Image.Image:
        """Open and fully decode ``path`` as RGB.

        Raises:
            ImageLoadError: ``image_missing`` when the file does not exist, ``image_unreadable`` when it cannot be
                decoded.
        """
        try:
            f = open(path, "rb")  # closed by the `with` below; no separate existence check (a stat per image)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ImageLoadError("image_missing", path, "no such file") from None
        except OSError as e:
            raise ImageLoadError("image_unreadable", path, f"{type(e).__name__}: {e}") from e
        try:
            with f:
                im = Image.open(f)
                im.load()  # decodes everything while the file is open
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ImageLoadError("image_unreadable", path, f"{type(e).__name__}: {e}") from e
        return im if im.mode == "RGB" else im.convert("RGB")

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        x = self.transform(image)  # uint8: (3, H, W) tensor, or (3, H, W) array from timm versions that end in ToNumpy
        return torch.from_numpy(x) if isinstance(x, np.ndarray) else x

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) tensor of one RGB image: uint8, or float32 normalised with ``normalize=True``."""
        return self._pixels(image).contiguous()  # (3, H, W)

    def load_many(self, paths: list[str]) -> torch.Tensor:
        """(n, 3, H, W) tensor of the images at ``paths``, in order (uint8, or float32 with ``normalize=True``)."""
        return torch.stack([self._pixels(self.load(p)) for p in paths])  # (n, 3, H, W)
