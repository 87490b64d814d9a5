"""One datamodule for every image-folder dataset; the data configs (conf/data/) set its folders,
which evaluate.py reads too."""

from __future__ import annotations

from typing import Callable, Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from datamodules.images import CenterCrop, EpochShuffle, ImageFolder, RandomCrop, shielded_worker_init
from osdic.checks import ConfigError, require_int, require_positive
from osdic.images import DEFAULT_MAX_PIXELS, existing_folders

#: the codecs pad to multiples of 64 (z is at H/64); training crops must already be.
CROP_MULTIPLE = 64


class ResumableLoader(DataLoader):
    """The training loader (over an :class:`EpochShuffle`), resumable mid-epoch: Lightning saves
    :meth:`state_dict` in every checkpoint and hands it to :meth:`load_state_dict` before
    iterating, so a resumed run skips the batches of the epoch it already trained on instead of
    replaying them."""

    def __init__(self, *args, batches_done: Callable[[], int], **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.batches_done()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)


class ImageFolderDataModule(pl.LightningDataModule):
    """Random crops for training; full images (or central crops, after resizing the short side
    if ``val_resize_short`` is set) for validation and test: the view evaluate.py takes of the
    same data node's folders (:func:`osdic.metrics.datasets.split_images`). ``name`` is the
    dataset's name in evaluation outputs, ``published_as`` the literature's (the published points'),
    which evaluation reads."""

    def __init__(
        self,
        name: str = "images",
        published_as: str | None = None,
        train_dirs: str | Sequence[str] | None = None,
        val_dirs: str | Sequence[str] | None = None,
        test_dirs: str | Sequence[str] | None = None,
        crop_size: int = 256,
        val_crop_size: int | None = None,
        val_resize_short: int | None = None,
        random_downscale: bool = False,
        min_downscale: float = 0.5,
        hflip: bool = True,
        cache_decoded: bool = False,
        crops_per_image: int = 1,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int = 4,
        pin_memory: bool = True,
        seed: int = 0,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__()
        for key, size in [("crop_size", crop_size), ("val_crop_size", val_crop_size)]:
            if size is not None and (size <= 0 or size % CROP_MULTIPLE):
                raise ConfigError(key, f"must be a positive multiple of {CROP_MULTIPLE}, got {size}")
        if not 0 < min_downscale <= 1:
            raise ConfigError("min_downscale", f"must be in (0, 1], got {min_downscale}")
        if val_crop_size is None and val_batch_size != 1:
            raise ConfigError("val_batch_size", "full-size validation images differ in size: use 1 or set val_crop_size")
        if val_resize_short is not None:
            require_int("val_resize_short", val_resize_short, minimum=1)
        require_positive("batch_size", batch_size)
        require_int("num_workers", num_workers, minimum=0)
        self.crops_per_image = require_int("crops_per_image", crops_per_image, minimum=1)
        self.name, self.published_as = name, published_as or name
        self.train_dirs = existing_folders("train_dirs", train_dirs)
        self.val_dirs = existing_folders("val_dirs", val_dirs)
        self.test_dirs = existing_folders("test_dirs", test_dirs)
        max_image_pixels = require_int("max_image_pixels", max_image_pixels, minimum=1)
        self.train_view = RandomCrop(crop_size, random_downscale, min_downscale, hflip, cache_decoded, max_image_pixels)
        self.eval_view = CenterCrop(val_crop_size, val_resize_short, max_image_pixels)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.datasets: dict[str, ImageFolder] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, folders, view in [
            ("train", self.train_dirs, self.train_view),
            ("val", self.val_dirs, self.eval_view),
            ("test", self.test_dirs, self.eval_view),
        ]:
            if folders and split not in self.datasets:
                self.datasets[split] = ImageFolder(folders, view, seed=self.seed)

    def _dataset(self, split: str) -> ImageFolder:
        if split not in self.datasets:
            raise ConfigError(f"{split}_dirs", f"no {split} folders configured")
        return self.datasets[split]

    @property
    def pins_memory(self) -> bool:
        """``pin_memory`` where it helps: batches go to a GPU (pinning for a CPU trainer only warns)."""
        return self.pin_memory and self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: ImageFolder, batch_size: int, loader_class=DataLoader, **kwargs) -> DataLoader:
        return loader_class(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pins_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=shielded_worker_init(self.trainer.global_rank if self.trainer else 0),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train")
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        # an index past the photos' count is another crop of photo index % count (ImageFolder)
        sampler = EpochShuffle(len(dataset) * self.crops_per_image, self.seed, world, rank)
        return self._loader(dataset, self.batch_size, ResumableLoader, sampler=sampler, drop_last=True,
                            batches_done=self._batches_done)

    def _batches_done(self) -> int:
        """Training batches finished in the current epoch (processed, whether or not the hooks
        after them have run: what a checkpoint taken now has trained on)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"), self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"), self.val_batch_size)

    def input_report(self) -> dict[str, int]:
        """Files skipped and converted so far, summed over the splits."""
        totals = {"skipped": 0, "converted": 0}
        for dataset in self.datasets.values():
            for key, count in dataset.report().items():
                totals[key] += count
        return totals
