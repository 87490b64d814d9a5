"""The embedded demo set: real photos that scikit-image (and matplotlib) ship inside their
packages (no download)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from datamodules.image_folder import ImageFolderDataModule
from osdic.utils.files import atomic_write

#: scikit-image's bundled photos (``camera``, ``brick`` and ``grass`` are grey, stored as RGB)
TRAIN_PHOTOS = ("astronaut", "rocket", "grace_hopper", "hubble_deep_field", "immunohistochemistry", "retina", "camera",
                "brick", "grass")
#: held out from training; the motorcycle is the left view of ``stereo_motorcycle``
VAL_PHOTOS = ("coffee", "chelsea", "motorcycle")


def _photo(name: str) -> Image.Image:
    import skimage.data

    if name == "grace_hopper":  # matplotlib's sample photo
        from matplotlib import cbook

        return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return Image.fromarray(skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)())


def materialize_samples(root: str | Path) -> tuple[Path, Path]:
    """Write the photos as PNGs under ``root/train`` and ``root/val`` (once)."""
    root = Path(root)
    for split, names in [("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS)]:
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = folder / f"{name}.png"
            if not target.exists():  # concurrent jobs race here: each writes whole files
                with atomic_write(target) as file:
                    _photo(name).convert("RGB").save(file, format="PNG")  # the grey photos too: a warning-free demo
    return root / "train", root / "val"


class SkimageSamplesDataModule(ImageFolderDataModule):
    """ImageFolderDataModule over scikit-image's photos, written to ``root`` on construction."""

    def __init__(self, root: str, **kwargs):
        train_dir, val_dir = materialize_samples(root)
        super().__init__(train_dirs=[str(train_dir)], val_dirs=[str(val_dir)], **kwargs)
