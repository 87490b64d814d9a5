"""A codec the library has never seen, written against the declared interface alone
(osdic/codec/interface.py), trains a step of stage 1, exports a package and round-trips real files
through it: nothing else in the project names it or needs to change for it."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import pytorch_lightning as pl
import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn
from torch.utils.data import DataLoader

from callbacks.rate_annealing import ConstantLambda
from lightning_modules.losses import DistortionLoss
from lightning_modules.stage1_vae import Stage1VAEModule
from osdic.codec.image_codec import compress_image, decompress_bytes
from osdic.codec.interface import ImageCodec, without_quantiles
from osdic.codec.package import export_package, load_package
from osdic.registry import CODEC, register

DOWNSCALE = 16


@register(CODEC)
class TinyFactorizedCodec(ImageCodec):
    """Two strided convolutions, a factorized prior (compressai's EntropyBottleneck), two
    transposed convolutions: one string per image."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.analysis = nn.Sequential(nn.Conv2d(3, channels, 5, stride=4, padding=2), nn.GELU(),
                                      nn.Conv2d(channels, channels, 5, stride=4, padding=2))
        self.synthesis = nn.Sequential(nn.ConvTranspose2d(channels, channels, 4, stride=4), nn.GELU(),
                                       nn.ConvTranspose2d(channels, 3, 4, stride=4))
        self.entropy_bottleneck = EntropyBottleneck(channels)

    @property
    def num_strings(self) -> int:
        return 1

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        return math.ceil(height / DOWNSCALE), math.ceil(width / DOWNSCALE)

    def _padded(self, x: Tensor) -> Tensor:
        height, width = self.latent_shape(*x.shape[-2:])
        return nn.functional.pad(x, (0, width * DOWNSCALE - x.shape[-1], 0, height * DOWNSCALE - x.shape[-2]))

    def forward(self, x: Tensor) -> dict:
        y_hat, likelihoods = self.entropy_bottleneck(self.analysis(self._padded(x)))
        x_hat = self.synthesis(y_hat)[..., :x.shape[-2], :x.shape[-1]]
        return {"x_hat": x_hat, "likelihoods": {"y": likelihoods}, "likelihoods_rounded": {"y": likelihoods}}

    def compress(self, x: Tensor) -> dict:
        y = self.analysis(self._padded(x))
        return {"strings": [self.entropy_bottleneck.compress(y)], "shape": tuple(y.shape[-2:])}

    def decompress(self, strings: list, shape: Sequence[int], image_size: Sequence[int] | None = None,
                   step=None) -> dict:
        x_hat = self.synthesis(self.entropy_bottleneck.decompress(strings[0], shape))
        if image_size is not None:
            x_hat = x_hat[..., :image_size[0], :image_size[1]]
        return {"x_hat": x_hat.clamp(0, 1)}

    def update(self, force: bool = False) -> bool:
        return self.entropy_bottleneck.update(force=force)

    def aux_loss(self) -> Tensor:
        return self.entropy_bottleneck.loss()

    def aux_parameters(self) -> list[nn.Parameter]:
        return [self.entropy_bottleneck.quantiles]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"analysis": list(self.analysis.parameters()), "synthesis": list(self.synthesis.parameters()),
                "entropy_model": without_quantiles(self.entropy_bottleneck)}


def test_a_new_codec_trains_a_step_exports_and_round_trips_files(tmp_path):
    torch.manual_seed(0)
    codec = TinyFactorizedCodec(channels=8)
    module = Stage1VAEModule(
        stage="sodec_stage1", codec=codec, distortion=DistortionLoss(lpips_weight=0.0),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3), aux_optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        val_metrics=["psnr"])
    before = [p.detach().clone() for p in codec.main_parameters()]
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[ConstantLambda(0.01)])
    trainer.fit(module, train_dataloaders=DataLoader(torch.rand(4, 3, 32, 32), batch_size=2))
    assert trainer.global_step == 1
    assert all(not torch.equal(b, p) for b, p in zip(before, codec.main_parameters())), "every part trained"

    codec.eval().update(force=True)
    directory = export_package(codec, tmp_path / "package")
    loaded, fingerprint = load_package(directory)
    assert type(loaded) is TinyFactorizedCodec
    image = torch.rand(3, 40, 56)
    data = compress_image(loaded, fingerprint, image)
    decoded = decompress_bytes(loaded, fingerprint, data)
    assert decoded.shape == (1, 3, 40, 56) and torch.equal(decoded, decompress_bytes(loaded, fingerprint, data))
    with torch.inference_mode():  # the package decodes what the trained codec decodes
        coded = codec.compress(image.unsqueeze(0))
        assert torch.equal(decoded, codec.decompress(coded["strings"], coded["shape"], (40, 56))["x_hat"])
