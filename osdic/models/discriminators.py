"""Discriminators. Each returns raw logits (any shape; losses average them) and says in
``space`` what it compares: ``latent`` (SD latents) or ``pixel`` (images in [0, 1]).

  latent         SODEC's D on 4-channel SD latents ŷ_0 vs the SD-VAE latent of x (PatchGAN)
  unet_features  OSDiff's D: both latents noised to a random t, the SD UNet's input + middle
                 blocks (initialised from SD, trainable) under the generator's UNet context, a
                 conv head, pooled
  pixel          a PatchGAN on images (OSDiff's pixel-space ablation)
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from osdic.models.backbone import DiffusionBackbone, diffuse
from osdic.registry import MODEL, register


class PatchDiscriminator(nn.Module):
    """Strided 4×4 convs with spectral norm and LeakyReLU, a 1-channel logit map."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256), space: str = "latent"):
        super().__init__()
        self.space = space
        layers: list[nn.Module] = []
        cin = in_channels
        for i, width in enumerate(widths):
            stride = 2 if i < len(widths) - 1 else 1
            layers += [spectral_norm(nn.Conv2d(cin, width, 4, stride=stride, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = width
        layers.append(spectral_norm(nn.Conv2d(cin, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...] | Tensor:
        """Logit maps of each input batch."""
        scores = tuple(self.net(x * 2 - 1 if self.space == "pixel" else x) for x in inputs)
        return scores if len(scores) > 1 else scores[0]


@register(MODEL)
def latent_discriminator(widths: Sequence[int] = (64, 128, 256)) -> PatchDiscriminator:
    return PatchDiscriminator(4, widths, space="latent")


@register(MODEL)
def pixel_discriminator(widths: Sequence[int] = (64, 128, 256, 512)) -> PatchDiscriminator:
    return PatchDiscriminator(3, widths, space="pixel")


class SamePaddedConv(nn.Conv2d):
    """A convolution whose output keeps the input's size for any kernel, even ones (OSDiff's 4×4):
    padded as ``padding="same"`` pads (the odd pixel after), in one explicit pad rather than the
    copy torch warns about on every run."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size)
        before, after = (kernel_size - 1) // 2, kernel_size // 2
        self.same_padding = (before, after, before, after)

    def forward(self, input: Tensor) -> Tensor:
        return super().forward(F.pad(input, self.same_padding))


@register(MODEL)
class UNetFeatureDiscriminator(nn.Module):
    """OSDiff's discriminator in the SD UNet's feature space.

    Real and fake latents are noised by the forward process to the same random t (with the
    same noise, as in OSDiff), passed through a trainable copy of the UNet's conv_in, time
    embedding, down blocks and mid block, and the mid-block features are scored by
    Conv4×4 → GroupNorm → SiLU → Conv4×4 → GroupNorm → SiLU → Conv1×1, averaged over space so
    any crop size works. ``forward(real, fake)`` scores both with one shared draw of t and noise.
    """

    space = "latent"

    def __init__(self, backbone: DiffusionBackbone, context: Tensor | None = None, head_width: int = 256,
                 groups: int = 32):
        super().__init__()
        unet = backbone.unet
        self.conv_in = copy.deepcopy(unet.conv_in)
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        for module in (self.conv_in, self.time_embedding, self.down_blocks, self.mid_block):
            _strip_lora(module)
            module.requires_grad_(True)
        self.register_buffer("alphas_cumprod", backbone.alphas_cumprod.clone(), persistent=False)
        # the generator's UNet context (OSDiff: SD's empty-prompt embedding), zeros without one
        if context is None:
            context = torch.zeros(1, 1, backbone.cross_attention_dim)
        self.register_buffer("context", context.detach().clone(), persistent=False)
        width = unet.config.block_out_channels[-1]
        groups = min(groups, head_width)
        self.head = nn.Sequential(
            SamePaddedConv(width, head_width, 4), nn.GroupNorm(groups, head_width), nn.SiLU(),
            SamePaddedConv(head_width, head_width, 4), nn.GroupNorm(groups, head_width), nn.SiLU(),
            nn.Conv2d(head_width, 1, 1),
        )

    def features(self, latent: Tensor, t: Tensor) -> Tensor:
        emb = self.time_embedding(self.time_proj(t).to(latent.dtype))
        context = self.context.to(latent.dtype).expand(latent.shape[0], -1, -1)
        h = self.conv_in(latent)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(h, emb, encoder_hidden_states=context)
            else:
                h, _ = block(h, emb)
        return self.mid_block(h, emb, encoder_hidden_states=context)

    def score(self, latent: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return self.head(self.features(diffuse(latent, noise, self.alphas_cumprod[t]), t)).mean(dim=(1, 2, 3))

    def forward(self, *latents: Tensor) -> tuple[Tensor, ...] | Tensor:
        """Logits of each latent batch, all noised with one draw of t and noise."""
        first = latents[0]
        t = torch.randint(0, len(self.alphas_cumprod), (first.shape[0],), device=first.device)
        noise = torch.randn_like(first)
        scores = tuple(self.score(latent, t, noise) for latent in latents)
        return scores if len(scores) > 1 else scores[0]


def _strip_lora(module: nn.Module) -> None:
    """The copy starts from the SD weights: fold nothing in, drop any LoRA wrappers (OSDiff's
    backbone has none; SODEC's would add LoRA to the copy)."""
    for name, child in list(module.named_children()):
        if hasattr(child, "base_layer"):
            setattr(module, name, copy.deepcopy(child.base_layer))
        else:
            _strip_lora(child)
