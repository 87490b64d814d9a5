"""Evaluation images: one split of a data node (conf/data/, the configs training reads too), seen
as its validation sees them.

Images are evaluated whole and padded by the codec (never resized) unless the node's evaluation
view says so (:func:`osdic.images.evaluation_view`): CLIC2020 in OSDiff's protocol
(``data=clic2020_768``) is resized so the short side is 768, then centre-cropped to 768².
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from osdic.checks import ConfigError
from osdic.images import DEFAULT_MAX_PIXELS, UnreadableImage, evaluation_view, existing_folders, list_images, open_rgb


class EvalImages:
    """Sorted images of folders and their subfolders, each as (name, upright 8-bit RGB PIL
    image) in the evaluation view; the name is the path relative to its folder (``sub/a.png``),
    which keys every result.

    A file that cannot be decoded is skipped with one warning naming it and recorded in
    :attr:`skipped` (name → reason); the others are evaluated."""

    def __init__(self, name: str, folders: str | os.PathLike | Sequence[str | os.PathLike],
                 resize_short: int | None = None, crop_size: int | None = None, max_images: int | None = None,
                 published_as: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        """``published_as``: the literature's name of this set in the published points (default
        ``name``); CLIC2020 in OSDiff's 768² protocol is DiffEIC's ``CLIC2020-DiffEIC-version``."""
        self.folders = [Path(folder) for folder in existing_folders("folders", folders)]
        if not self.folders:
            raise ConfigError("folders", "no folder given")
        self.name, self.resize_short, self.crop_size = name, resize_short, crop_size
        self.published_as = published_as or name
        self.max_pixels = max_pixels
        self.files: dict[str, Path] = {}
        for folder in self.folders:
            for path in list_images([folder]):
                image_name = path.relative_to(folder).as_posix()
                if image_name in self.files:
                    raise ConfigError("folders", f"{image_name} is under two folders ({self.files[image_name]}, "
                                                 f"{path}): its results would mix")
                self.files[image_name] = path
        if not self.files:
            raise ConfigError("folders", f"no images under {', '.join(map(str, self.folders))}")
        self.files = dict(list(self.files.items())[:max_images])
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        for name, path in self.files.items():
            try:
                image = open_rgb(path, max_pixels=self.max_pixels).image
            except UnreadableImage as exc:
                if name not in self.skipped:
                    warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning, stacklevel=2)
                self.skipped[name] = str(exc)
                continue
            yield name, evaluation_view(image, self.resize_short, self.crop_size)


def split_images(data: Mapping[str, Any], split: str = "test", max_images: int | None = None) -> EvalImages:
    """The images of one split of a data node (conf/data/*.yaml, as a mapping): its
    ``<split>_dirs``, in its validation view (``val_resize_short``, ``val_crop_size``), named
    ``name``. A ConfigError names the node's key (``test_dirs``), not this function's."""
    key = f"{split}_dirs"
    if not data.get(key):
        raise ConfigError(key, f"{data.get('name')} has no {split} folders to evaluate: set {key}")
    try:
        return EvalImages(data["name"], data[key], data.get("val_resize_short"), data.get("val_crop_size"), max_images,
                          data.get("published_as"), data.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    except ConfigError as error:
        raise ConfigError(key if error.key == "folders" else error.key, error.message) from None
