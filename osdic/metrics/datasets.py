"""Evaluation datasets and their protocols (a config each: conf/dataset/).

Images are evaluated whole and padded by the codec (never resized) unless the protocol says so:
CLIC2020 in OSDiff's protocol is resized so the short side is 768, then centre-cropped to 768².
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from osdic.images import UnreadableImage, list_images, open_rgb
from osdic.checks import ConfigError


class EvalImages:
    """Sorted images of a folder and its subfolders, each as (name, upright 8-bit RGB PIL image);
    the name is the path relative to the folder (``sub/a.png``), which keys every result.

    A file that cannot be decoded is skipped with one warning naming it and recorded in
    :attr:`skipped` (name → reason); the others are evaluated."""

    def __init__(self, name: str, root: str, resize_short: int | None = None, center_crop: int | None = None,
                 max_images: int | None = None):
        if not Path(root).is_dir():
            raise ConfigError("root", f"dataset directory {root} does not exist")
        self.name, self.resize_short, self.center_crop = name, resize_short, center_crop
        self.root = Path(root)
        self.files = list_images([root])[:max_images]
        if not self.files:
            raise ConfigError("root", f"no images under {root}")
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        for path in self.files:
            name = path.relative_to(self.root).as_posix()
            try:
                image = open_rgb(path).image
            except UnreadableImage as exc:
                if name not in self.skipped:
                    warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning, stacklevel=2)
                self.skipped[name] = str(exc)
                continue
            if self.resize_short is not None:
                scale = self.resize_short / min(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
            if self.center_crop is not None:
                left, top = (image.width - self.center_crop) // 2, (image.height - self.center_crop) // 2
                image = image.crop((left, top, left + self.center_crop, top + self.center_crop))
            yield name, image
