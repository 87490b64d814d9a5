"""Bad input never kills a run and is never silently ignored."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import ImageFolderDataModule
from osdic import images
from datamodules.images import CenterCrop, EpochShuffle, ImageFolder, RandomCrop
from osdic.images import UnreadableImage, decode_png, open_rgb

rng = np.random.default_rng(0)


def _rgb(h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    Image.fromarray(_rgb(200, 300)).save(root / "good.png")
    Image.fromarray(_rgb(30, 40)).save(root / "small.png")  # smaller than any crop
    Image.fromarray(_rgb(200, 300)[..., 0], "L").save(root / "grey.png")
    Image.fromarray(np.dstack([_rgb(200, 300), np.full((200, 300), 128, np.uint8)]), "RGBA").save(root / "alpha.png")
    Image.fromarray(_rgb(200, 300)).convert("P").save(root / "palette.png")
    Image.fromarray(_rgb(200, 300)).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65536, (200, 300))).astype(np.uint16)).save(root / "deep16.png")
    rotated = Image.fromarray(_rgb(100, 200))  # stored 200 wide, 100 high; EXIF says rotate 90°
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(root / "rotated.jpg", exif=exif)
    full = root / "full.jpg"
    Image.fromarray(_rgb(400, 400)).save(full, quality=95)
    (root / "truncated.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    full.unlink()
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    frames = [Image.fromarray(_rgb(200, 300)).convert("P") for _ in range(2)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    (root / "dangling.png").symlink_to(root / "deleted.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    os.mkfifo(root / "fifo.png")  # opening it would block forever
    return root


CONVERTED = {"grey.png", "alpha.png", "palette.png", "cmyk.jpg", "deep16.png", "rotated.jpg", "animated.gif"}
SKIPPED = {"truncated.jpg", "empty.png", "notes.jpg", "dangling.png", "loop.png", "fifo.png"}


def test_every_item_is_an_rgb_crop_and_each_bad_file_warns_once(messy_folder):
    dataset = ImageFolder([messy_folder], RandomCrop(64, random_downscale=True, min_scale=0.5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs: no second warning for the same file
            items = [dataset[i] for i in range(len(dataset))]
    assert all(item.shape == (3, 64, 64) and item.dtype == torch.float32 for item in items)
    assert all(0 <= float(item.min()) and float(item.max()) <= 1 for item in items)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    for name in CONVERTED | SKIPPED:
        assert sum(name in m for m in messages) == 1, (name, messages)
    assert dataset.report() == {"skipped": len(SKIPPED), "converted": len(CONVERTED)}


def test_exif_orientation_and_bit_depth_are_honoured(messy_folder):
    assert open_rgb(messy_folder / "rotated.jpg").image.size == (100, 200)  # upright: 100 wide
    deep = np.asarray(Image.open(messy_folder / "deep16.png"), dtype=np.float64)
    converted = np.asarray(open_rgb(messy_folder / "deep16.png").image)[..., 0]
    assert np.abs(converted - deep / 257).max() <= 0.5 + 1e-6, "16-bit scaled to 8-bit, not clipped"
    assert open_rgb(messy_folder / "alpha.png").note is not None


def test_validation_view_keeps_whole_images(messy_folder):
    dataset = ImageFolder([messy_folder], CenterCrop(None))
    with pytest.warns(RuntimeWarning, match="rotated.jpg: EXIF orientation 6 applied"):
        shape = dataset[[f.name for f in dataset.files].index("rotated.jpg")].shape
    assert shape == (3, 200, 100)


def test_the_evaluation_view_resizes_the_short_side_then_crops_the_centre_never_padding():
    gradient = Image.fromarray(np.broadcast_to(np.arange(200, dtype=np.uint8)[None, :, None], (100, 200, 3)).copy())
    assert images.evaluation_view(gradient).size == (200, 100), "neither step set: the image as it is"
    assert images.evaluation_view(gradient, resize_short=50).size == (100, 50)
    centre = np.asarray(images.evaluation_view(gradient, crop_size=64))
    assert centre.shape == (64, 64, 3) and centre[0, 0, 0] == 68, "the central 64 columns (68..131)"
    small = np.asarray(images.evaluation_view(gradient, resize_short=32, crop_size=48))
    assert small.shape == (48, 48, 3) and small.min() > 0, "a short side under the crop is up-scaled, not padded"


def test_datamodule_loads_batches_with_workers_and_reports_counts(messy_folder):
    dm = ImageFolderDataModule(
        train_dirs=[str(messy_folder)], val_dirs=[str(messy_folder)], crop_size=64, batch_size=1, num_workers=2
    )
    dm.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.datasets["train"]) and all(b.shape == (1, 3, 64, 64) for b in batches)
    # every file was tried once in the workers; their findings reach the main process
    assert dm.input_report() == {"skipped": len(SKIPPED), "converted": len(CONVERTED)}


def test_crops_per_image_takes_that_many_crops_of_every_photo_per_epoch(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((96, 128, 3), 60 * i, np.uint8)).save(tmp_path / f"photo{i}.png")
    dm = ImageFolderDataModule(train_dirs=[str(tmp_path)], val_dirs=[str(tmp_path)], crop_size=64, batch_size=2,
                               crops_per_image=4, num_workers=0)
    dm.setup("fit")
    crops = torch.cat(list(dm.train_dataloader()))
    assert crops.shape[0] == 12, "3 photos × 4 crops in one epoch"
    colours = sorted(round(float(c.mean()) * 255) for c in crops)
    assert colours == [0] * 4 + [60] * 4 + [120] * 4, "each photo 4 times"
    with pytest.raises(Exception, match="crops_per_image"):
        ImageFolderDataModule(train_dirs=[str(tmp_path)], val_dirs=None, crops_per_image=0)


def test_jpeg_draft_decoding_covers_the_crop(tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(_rgb(1200, 1600)).save(big)
    crop = RandomCrop(256, random_downscale=True, min_scale=0.25)
    import random

    scales = []
    for seed in range(20):
        tensor, _ = crop(big, random.Random(seed))
        assert tensor.shape == (3, 256, 256)
        scales.append(crop.draw_scale(1600, 1200, random.Random(seed)))
    assert min(scales) < 0.5, "some crops took the draft (reduced-size) JPEG path"


def test_a_crop_at_scale_one_is_an_exact_copy_of_source_pixels(tmp_path):
    """Training targets are never resampled when no scaling is asked for: every crop (flipped
    or not) is found bit for bit at an integer offset of the source."""
    source = _rgb(96, 128)
    Image.fromarray(source).save(tmp_path / "photo.png")
    dataset = ImageFolder([tmp_path], RandomCrop(64, random_downscale=False, hflip=True))
    windows = np.lib.stride_tricks.sliding_window_view(source, (64, 64, 3))[..., 0, :, :, :]
    for epoch in range(8):
        crop = (dataset[(0, epoch)].permute(1, 2, 0) * 255).round().byte().numpy()
        found = [np.array_equal(windows[top, left], c) for c in (crop, crop[:, ::-1])
                 for top in range(windows.shape[0]) for left in range(windows.shape[1])]
        assert any(found), f"epoch {epoch}: the crop is not a copy of source pixels"


@pytest.mark.parametrize("downscale", [False, True])
def test_photos_kept_in_memory_give_the_same_crops_without_rereading_the_files(tmp_path, downscale):
    for name in ("a", "b"):
        Image.fromarray(_rgb(150, 200)).save(tmp_path / f"{name}.png")
    view = dict(size=64, random_downscale=downscale, min_scale=0.5)
    from_disk = ImageFolder([tmp_path], RandomCrop(**view))
    cached = ImageFolder([tmp_path], RandomCrop(**view, cache_decoded=True))
    keys = [(index, epoch) for epoch in range(3) for index in range(2)]
    expected = [from_disk[key] for key in keys[:2]]
    assert all(torch.equal(cached[key], crop) for key, crop in zip(keys[:2], expected))
    for path in tmp_path.glob("*.png"):
        path.unlink()
    assert all(torch.equal(cached[key], crop) for key, crop in zip(keys[:2], expected))
    assert cached.report() == {"skipped": 0, "converted": 0}


def test_fast_png_decoder_matches_pillow_and_still_rejects_damaged_files(tmp_path, monkeypatch):
    """pyspng ignores checksums: a bit flipped inside the image data must still make the file
    unreadable (skipped and warned), never a silently different training image."""
    pytest.importorskip("pyspng")
    pixels = _rgb(120, 90)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    data = (tmp_path / "photo.png").read_bytes()
    assert np.array_equal(decode_png(data), pixels)
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "photo.png").image), pixels)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    with pytest.raises(UnreadableImage):
        open_rgb(tmp_path / "flipped.png")
    monkeypatch.setattr(images, "pyspng", None)  # the fallback where pyspng has no wheel
    assert np.array_equal(decode_png(data), pixels)
    with pytest.raises(UnreadableImage):
        open_rgb(tmp_path / "flipped.png")


def _pass(epoch: int, position: int = 0, set_epoch: int | None = None, **ranks) -> list[tuple[int, int]]:
    sampler = EpochShuffle(10, seed=3, **ranks)
    sampler.resume(epoch, position)
    if set_epoch is not None:
        sampler.set_epoch(set_epoch)
    return list(sampler)


def test_epoch_shuffle_resumes_mid_epoch_and_splits_epochs_across_ranks():
    epoch2 = _pass(2)
    assert {epoch for _, epoch in epoch2} == {2} and sorted(i for i, _ in epoch2) == list(range(10))
    assert _pass(2, 4) == epoch2[4:], "a resumed pass skips what was trained on"
    assert _pass(2, 4, set_epoch=3) == _pass(3), "taken at the end of epoch 2: epoch 3 is whole"
    ranks = [_pass(2, num_replicas=3, rank=r) for r in range(3)]
    assert all(len(indices) == 4 for indices in ranks)  # 10 padded to 12
    assert {i for indices in ranks for i, _ in indices} == set(range(10))
    assert _pass(2, 2, num_replicas=3, rank=1) == ranks[1][2:]


def test_the_input_report_logs_once_per_logging_interval_when_epochs_are_a_batch_long():
    from types import SimpleNamespace

    from callbacks.input_report import InputReport

    logged_at = []
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=4,
                              datamodule=SimpleNamespace(input_report=lambda: {"skipped": 1, "converted": 0}))
    module = SimpleNamespace(log_dict=lambda values, **kwargs: logged_at.append((trainer.global_step, values)))
    callback = InputReport()
    for step in range(1, 11):  # ten one-batch epochs
        trainer.global_step = step
        callback.on_train_epoch_end(trainer, module)
    assert [step for step, _ in logged_at] == [1, 5, 9]
    assert logged_at[0][1] == {"data/skipped_images": 1.0, "data/converted_images": 0.0}
    callback.on_validation_epoch_end(trainer, module)
    assert len(logged_at) == 4, "every validation reports"
