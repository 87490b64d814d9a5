"""Image datasets: folders (LSDIR, DIV2K, Kodak, CLIC2020, any) with bad-input-safe loading, and
shards prepared from them for streamed training at cluster scale."""

from datamodules.image_folder import ImageFolderDataModule
from datamodules.samples import SkimageSamplesDataModule
from datamodules.shards import ShardsDataModule

__all__ = ["ImageFolderDataModule", "ShardsDataModule", "SkimageSamplesDataModule"]
