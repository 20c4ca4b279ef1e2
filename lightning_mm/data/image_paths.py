"""Image paths of data records stay inside their image folder unless allowed otherwise."""

from __future__ import annotations

import os

from lightning_mm.data.llava_records import BadSampleError

__all__ = ["ImageFolder"]


class ImageFolder:
    """The folder the image paths of a data file are relative to, and the checks that a path stays inside it.

    A path leaves the folder as written (absolute, or a ``..`` that climbs out of it: :meth:`check_path`, when the
    file is read) or through a symbolic link that points out of it (:meth:`resolves_inside`, when the image is
    loaded: a ``realpath`` per image, nothing per record when the file is read).

    Args:
        root: The folder (``""``: the working directory).
        allow_outside: Accept every path (absolute, ``..``, links out of the folder).
    """

    def __init__(self, root: str, allow_outside: bool = False) -> None:
        self.root = root
        self.allow_outside = allow_outside
        self._real_root: str | None = None

    def check_path(self, path: str, at: str) -> None:
        """Raise :class:`~lightning_mm.data.BadSampleError` (``image_outside_folder``) naming ``at`` (file, line and
        record) when the record's image ``path`` is absolute or climbs out of the folder."""
        if self.allow_outside:
            return
        normal = os.path.normpath(path)
        if os.path.isabs(path) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
            raise BadSampleError(
                "image_outside_folder",
                f"{at}: image path {path!r} leaves the image folder {self.root or os.getcwd()!r} (absolute paths and "
                "'..' out of it are refused; set allow_images_outside_folder to accept them)",
            )

    def resolves_inside(self, path: str) -> bool:
        """Whether ``path`` (the joined path of an image), symbolic links resolved, lies inside the folder."""
        if self.allow_outside:
            return True
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        return real == self._real_root or real.startswith(self._real_root.rstrip(os.sep) + os.sep)
