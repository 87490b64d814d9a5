"""Control modules: how OSDiff's condition y_c steers the frozen SD UNet in its one step.

  ControlNetXS    the public code's (DiffEIC's) module, ControlNet-XS-like: a narrow copy of the
                  UNet's encoder and middle block (``width_ratio`` of its widths) reading
                  concat(y_t, y_c), whose features enter the frozen UNet through zero-initialised
                  1×1 convolutions after every encoder stage (so they flow on through the rest of
                  the encoder as well as into its skip), after the middle block, and into the
                  hidden state entering every decoder stage.
  FullControlNet  diffusers' ``ControlNetModel``: a full-width trainable copy of the encoder and
                  middle block, y_c through a conditioning embedding; its zero-initialised
                  residuals are added to the UNet's skips and middle block only.

Both are called as ``control(unet, latent, timestep, context, condition)`` → the UNet's
prediction, and start as a no-op (every connection into the UNet is zero). Both are built from
the UNet's config alone, so a codec package rebuilds them without the UNet object;
``initialise_from(unet)`` gives a new run the starting weights the UNet's own weights imply.

Why not diffusers' ``UNetControlNetXSModel``: it fuses the base UNet's blocks and the adapter
into one new model (a second UNet beside the backbone's frozen one), feeds the base's features
back into the control branch (the public code's branch runs on its own), and supports two
layers per encoder block only (SD's), so not the tiny test UNet.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Iterable, Iterator, Sequence

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn, get_down_block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from osdic.checks import require_int, require_positive
from osdic.registry import CODEC, register
from osdic.utils.untrusted import check_settings


def _check_sd_unet(config: dict) -> None:
    """The UNets the stage-by-stage walk below reproduces exactly: SD 1.x/2.x's layout."""
    check_settings(UNet2DConditionModel, config, "unet_config")
    unsupported = {key: config.get(key) for key in ("class_embed_type", "addition_embed_type", "time_embedding_act_fn",
                                                    "encoder_hid_dim_type") if config.get(key) is not None}
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        unsupported["mid_block_type"] = config["mid_block_type"]
    if not isinstance(config["layers_per_block"], int) or config.get("center_input_sample"):
        unsupported.update(layers_per_block=config["layers_per_block"], center_input_sample=config.get("center_input_sample"))
    if unsupported:
        raise ValueError(f"ControlNetXS controls Stable Diffusion 1.x/2.x-style UNets; this one has {unsupported}")


def encoder_stage_channels(widths: Sequence[int], layers: int) -> list[int]:
    """Channels of each encoder stage's output (the UNet's skips): conv_in, then per block
    each resnet (+ attention) and the downsampler (all blocks but the last have one)."""
    channels = [widths[0]]
    for level, width in enumerate(widths):
        channels += [width] * (layers + (level < len(widths) - 1))
    return channels


def decoder_stage_channels(widths: Sequence[int], layers: int) -> list[int]:
    """Channels of the hidden state entering each decoder resnet, before its skip is joined:
    up block i has layers + 1 resnets; the first reads the previous block's width."""
    reverse = list(reversed(widths))
    channels = []
    for level, width in enumerate(reverse):
        channels += [reverse[max(level - 1, 0)]] + [width] * layers
    return channels


def _stages(block: nn.Module) -> Iterable[tuple[nn.Module, nn.Module | None]]:
    """(resnet, attention or None) pairs of a diffusers UNet block, in order."""
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    return zip(block.resnets, attentions)


def _resnet(block: nn.Module, resnet: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
    # the UNet's gradient checkpointing, where the backbone enables it, as diffusers applies it
    if block.gradient_checkpointing and torch.is_grad_enabled():
        return checkpoint(resnet, h, emb, use_reentrant=False)
    return resnet(h, emb)


def _attend(attention: nn.Module | None, h: Tensor, context: Tensor) -> Tensor:
    return h if attention is None else attention(h, encoder_hidden_states=context, return_dict=False)[0]


def controlled_unet(
    unet: UNet2DConditionModel,
    sample: Tensor,
    timestep: Tensor,
    context: Tensor,
    encoder_residuals: Iterable[Tensor],
    middle_residual: Tensor,
    decoder_residuals: Iterable[Tensor],
) -> Tensor:
    """``unet(sample, timestep, context).sample``, computed stage by stage as diffusers does for
    an SD UNet, plus: ``encoder_residuals[k]`` added to the k-th encoder stage's output (conv_in,
    each resnet + attention, each downsampler), ``middle_residual`` to the middle block's, and
    ``decoder_residuals[k]`` to the hidden state entering the k-th decoder resnet."""
    encoder: Iterator[Tensor] = iter(encoder_residuals)
    decoder: Iterator[Tensor] = iter(decoder_residuals)
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))
    h = unet.conv_in(sample) + next(encoder)
    skips = [h]
    for block in unet.down_blocks:
        for resnet, attention in _stages(block):
            h = _attend(attention, _resnet(block, resnet, h, emb), context) + next(encoder)
            skips.append(h)
        for downsampler in block.downsamplers or []:
            h = downsampler(h) + next(encoder)
            skips.append(h)
    h = unet.mid_block(h, emb, encoder_hidden_states=context) + middle_residual
    # diffusers passes the skip's size to the upsamplers only when the sample is not a multiple
    # of the total downsampling (interpolating to a size or by 2 round differently)
    odd_size = any(side % 2**unet.num_upsamplers for side in sample.shape[-2:])
    for block in unet.up_blocks:
        for resnet, attention in _stages(block):
            h = torch.cat([h + next(decoder), skips.pop()], dim=1)
            h = _attend(attention, _resnet(block, resnet, h, emb), context)
        for upsampler in block.upsamplers or []:
            h = upsampler(h, skips[-1].shape[2:] if odd_size else None)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _round_to_multiple(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


def _largest_divisor(number: int, at_most: int) -> int:
    return max(d for d in range(1, min(number, at_most) + 1) if number % d == 0)


@register(CODEC)
class ControlNetXS(nn.Module):
    """The narrow control encoder + middle block and its zero-initialised connections (module
    docstring). Its widths are ``width_ratio`` × the UNet's, rounded to a multiple of the UNet's
    GroupNorm groups (SD 2.1 at 0.2: 64, 128, 256, 256, as the public code's); its attention
    heads have ``head_channels`` channels (public code: 16); it learns its own time embedding."""

    def __init__(self, unet_config: dict[str, Any], conditioning_channels: int, width_ratio: float = 0.2,
                 head_channels: int = 16):
        super().__init__()
        require_positive("width_ratio", width_ratio)
        require_int("head_channels", head_channels, minimum=1)
        _check_sd_unet(unet_config)
        base = list(unet_config["block_out_channels"])
        layers, groups = unet_config["layers_per_block"], unet_config["norm_num_groups"]
        widths = [_round_to_multiple(width * width_ratio, groups) for width in base]
        time_channels = 4 * base[0]  # the UNet's time-embedding width: its resnets' temb input
        common = dict(temb_channels=time_channels, resnet_eps=unet_config["norm_eps"], resnet_act_fn=unet_config["act_fn"],
                      resnet_groups=groups, cross_attention_dim=unet_config["cross_attention_dim"],
                      use_linear_projection=unet_config["use_linear_projection"])

        def heads(width: int) -> int:
            return width // _largest_divisor(width, head_channels)

        self.conv_in = nn.Conv2d(unet_config["in_channels"] + conditioning_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(base[0], time_channels)
        self.down_blocks = nn.ModuleList(
            get_down_block(block_type, num_layers=layers, in_channels=widths[max(level - 1, 0)], out_channels=width,
                           add_downsample=level < len(widths) - 1, num_attention_heads=heads(width),
                           attention_head_dim=_largest_divisor(width, head_channels),
                           downsample_padding=unet_config["downsample_padding"], **common)
            for level, (block_type, width) in enumerate(zip(unet_config["down_block_types"], widths))
        )
        self.mid_block = UNetMidBlock2DCrossAttn(in_channels=widths[-1], num_attention_heads=heads(widths[-1]), **common)
        self.encoder_connections = nn.ModuleList(
            _zero_conv(c, b) for c, b in zip(encoder_stage_channels(widths, layers), encoder_stage_channels(base, layers))
        )
        self.middle_connection = _zero_conv(widths[-1], base[-1])
        self.decoder_connections = nn.ModuleList(
            _zero_conv(c, b)
            for c, b in zip(reversed(encoder_stage_channels(widths, layers)), decoder_stage_channels(base, layers))
        )

    @torch.no_grad()
    def initialise_from(self, unet: UNet2DConditionModel) -> None:
        """The public code's start: each weight of the narrow encoder, middle block and time
        embedding is the leading slice of the UNet's weight of the same name, tiled where this
        one is wider (conv_in reads y_c through the noisy latent's filters). The connections
        stay zero. (LoRA-wrapped UNet weights have other names and are left as initialised.)"""
        base = unet.state_dict()
        for name, tensor in self.state_dict().items():
            source = base.get(name)
            if source is None or source.dim() != tensor.dim():
                continue
            tiled = source.repeat(*(math.ceil(n / s) for n, s in zip(tensor.shape, source.shape)))
            tensor.copy_(tiled[tuple(slice(0, n) for n in tensor.shape)])

    def forward(self, unet: UNet2DConditionModel, latent: Tensor, timestep: Tensor, context: Tensor,
                condition: Tensor) -> Tensor:
        emb = self.time_embedding(unet.get_time_embed(sample=latent, timestep=timestep))
        h = self.conv_in(torch.cat([latent, condition.to(latent.dtype)], dim=1))
        features = [h]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, states = block(h, emb, encoder_hidden_states=context)
            else:
                h, states = block(h, emb)
            features += states
        middle = self.mid_block(h, emb, encoder_hidden_states=context)
        return controlled_unet(
            unet, latent, timestep, context,
            encoder_residuals=[connect(f) for connect, f in zip(self.encoder_connections, features)],
            middle_residual=self.middle_connection(middle),
            decoder_residuals=[connect(f) for connect, f in zip(self.decoder_connections, reversed(features))],
        )


@register(CODEC)
class FullControlNet(nn.Module):
    """diffusers' ``ControlNetModel`` as ``ControlNetModel.from_unet`` builds it, y_c through a
    one-level conditioning embedding of ``embedding_channels`` (it is already at the latent's
    resolution)."""

    def __init__(self, unet_config: dict[str, Any], conditioning_channels: int, embedding_channels: int = 32):
        super().__init__()
        require_int("embedding_channels", embedding_channels, minimum=1)
        accepted = inspect.signature(ControlNetModel.__init__).parameters
        self.model = ControlNetModel(
            **{key: value for key, value in unet_config.items() if key in accepted},
            conditioning_channels=conditioning_channels, conditioning_embedding_out_channels=(embedding_channels,),
        )

    @torch.no_grad()
    def initialise_from(self, unet: UNet2DConditionModel) -> None:
        """What ``ControlNetModel.from_unet`` copies: the UNet's encoder, middle block and embeddings."""
        for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"):
            getattr(self.model, name).load_state_dict(getattr(unet, name).state_dict())

    def forward(self, unet: UNet2DConditionModel, latent: Tensor, timestep: Tensor, context: Tensor,
                condition: Tensor) -> Tensor:
        down, mid = self.model(latent, timestep, encoder_hidden_states=context, controlnet_cond=condition,
                               return_dict=False)
        return unet(latent, timestep, encoder_hidden_states=context, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
