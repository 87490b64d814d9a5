"""Image datasets: folders (LSDIR, DIV2K, Kodak, CLIC2020, any), bad-input-safe loading."""

from datamodules.image_folder import ImageFolderDataModule
from datamodules.samples import SkimageSamplesDataModule

__all__ = ["ImageFolderDataModule", "SkimageSamplesDataModule"]
