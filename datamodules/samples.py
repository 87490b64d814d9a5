"""The embedded demo set: real photos that scikit-image ships inside its package (no download)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from datamodules.image_folder import ImageFolderDataModule

#: scikit-image's bundled photos; ``camera`` is greyscale on purpose (exercises conversion).
TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera", "brick", "grass")
VAL_PHOTOS = ("coffee", "chelsea")


def materialize_samples(root: str | Path) -> tuple[Path, Path]:
    """Write the photos as PNGs under ``root/train`` and ``root/val`` (once)."""
    import skimage.data

    root = Path(root)
    for split, names in [("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS)]:
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = folder / f"{name}.png"
            if not target.exists():
                tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.png")  # concurrent jobs race here
                Image.fromarray(getattr(skimage.data, name)()).save(tmp)
                tmp.replace(target)
    return root / "train", root / "val"


class SkimageSamplesDataModule(ImageFolderDataModule):
    """ImageFolderDataModule over scikit-image's photos, written to ``root`` on construction."""

    def __init__(self, root: str, **kwargs):
        train_dir, val_dir = materialize_samples(root)
        super().__init__(train_dirs=[str(train_dir)], val_dirs=[str(val_dir)], **kwargs)
