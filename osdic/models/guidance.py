"""Cross-attention guidance for the one-step UNet: the tokens c_g that replace the text embedding.

Variants (SODEC's guidance ablation), one config key ``model.codec.guidance``:
  none          learned null tokens
  text_caption  a caption of x̂_f (a captioning model) through SD's own text encoder
  text          a fixed prompt through SD's text encoder, computed once (OSDiff's empty-prompt context)
  hyperprior    tokens from ẑ
  fgm           the Fidelity Guidance Module: x̂_f → frozen ViT F → trainable projection F_p
All produce ``num_tokens × context_dim`` (77 × 1024 for SD 2.1) and share ``forward(x_hat_f, z_hat)``;
the FGM and the caption read x̂_f (``uses_fidelity_image``), the others get ``None`` for it, so
SODEC runs D_a only when something needs x̂_f.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from osdic.checks import MissingWeightsError, require_int
from osdic.utils.modules import ExternalWeights, architecture_only_build, plain
from osdic.registry import CODEC, register

#: bounds of the guidance's sizes (SD reads 77 tokens; CLIP's towers read 224–336 px): wider values
#: only cost time, and a codec package must not be able to make decoding take hours
MAX_TOKENS, MAX_HEADS, MAX_IMAGE_SIZE, MAX_CAPTION_TOKENS = 1024, 64, 1024, 256

#: CLIP's image normalisation (the default ViT is a CLIP vision tower).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TokenResampler(nn.Module):
    """Any number of input tokens → ``num_tokens`` tokens of ``out_dim``: a linear projection,
    then learned queries cross-attending to the projected tokens (one attention layer)."""

    def __init__(self, in_dim: int, out_dim: int, num_tokens: int = 77, heads: int = 8):
        super().__init__()
        require_int("num_tokens", num_tokens, minimum=1, below=MAX_TOKENS + 1)
        require_int("heads", heads, minimum=1, below=MAX_HEADS + 1)
        self.project = nn.Linear(in_dim, out_dim)
        self.queries = nn.Parameter(torch.randn(num_tokens, out_dim) * out_dim**-0.5)
        self.attention = nn.MultiheadAttention(out_dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        keys = self.project(tokens)
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1).to(keys.dtype)
        attended, _ = self.attention(queries, keys, keys, need_weights=False)
        return self.norm(queries + attended)


@register(CODEC)
class NullGuidance(nn.Module):
    """(i) No guidance: the same learned tokens for every image."""

    uses_fidelity_image = False

    def __init__(self, context_dim: int, num_tokens: int = 77, **_: Any):
        super().__init__()
        require_int("num_tokens", num_tokens, minimum=1, below=MAX_TOKENS + 1)
        self.tokens = nn.Parameter(torch.zeros(1, num_tokens, context_dim))

    def forward(self, x_hat_f: Tensor | None, z_hat: Tensor) -> Tensor:
        return self.tokens.expand(z_hat.shape[0], -1, -1)


@register(CODEC)
class HyperpriorGuidance(nn.Module):
    """(iii) Tokens from the hyper latent ẑ: one token per ẑ position, resampled to 77."""

    uses_fidelity_image = False

    def __init__(self, context_dim: int, hyper_channels: int, num_tokens: int = 77, heads: int = 8, **_: Any):
        super().__init__()
        self.resampler = TokenResampler(hyper_channels, context_dim, num_tokens, heads)

    def forward(self, x_hat_f: Tensor | None, z_hat: Tensor) -> Tensor:
        return self.resampler(z_hat.flatten(2).transpose(1, 2))


@register(CODEC)
class VisionEncoder(ExternalWeights):
    """The frozen ViT F (any transformers vision model): image in [0, 1] → its token sequence.
    Frozen parameters, but differentiable w.r.t. the image, so D_a learns through it."""

    def __init__(
        self,
        pretrained: str | None = "openai/clip-vit-large-patch14",
        config: dict | None = None,
        image_size: int = 224,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel, CLIPVisionConfig, CLIPVisionModel

        self.pretrained_source = pretrained if config is None else None

        require_int("image_size", image_size, minimum=1, below=MAX_IMAGE_SIZE + 1)
        if config is not None:
            self.model = CLIPVisionModel(CLIPVisionConfig(**plain(config)))
        else:
            try:
                # local files only, and never the model's own code: a package may name this model
                if architecture_only_build():
                    self.model = AutoModel.from_config(AutoConfig.from_pretrained(
                        pretrained, local_files_only=True, trust_remote_code=False), trust_remote_code=False)
                else:
                    self.model = AutoModel.from_pretrained(pretrained, local_files_only=True, trust_remote_code=False)
            except (OSError, ValueError) as exc:  # ValueError: a model that would need its own code
                raise MissingWeightsError(
                    f"cannot load the guidance ViT {pretrained!r}: {exc}\nDownload it once "
                    f"(`hf download {pretrained}`) into the HF cache, or set "
                    f"model.codec.guidance.vit.pretrained to a local directory."
                ) from None
            if hasattr(self.model, "vision_model"):  # a full CLIP model: keep the vision tower
                self.model = self.model.vision_model
        self.model.requires_grad_(False).eval()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> "VisionEncoder":
        return super().train(False)

    def forward(self, image: Tensor) -> Tensor:
        image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return self.model(pixel_values=(image - self.mean) / self.std).last_hidden_state


@register(CODEC)
class FidelityGuidance(nn.Module):
    """(iv) SODEC's FGM: c_g = F_p(F(x̂_f))."""

    uses_fidelity_image = True

    def __init__(self, context_dim: int, vit: VisionEncoder, num_tokens: int = 77, heads: int = 8, **_: Any):
        super().__init__()
        self.vit = vit
        self.projection = TokenResampler(vit.hidden_size, context_dim, num_tokens, heads)

    def forward(self, x_hat_f: Tensor, z_hat: Tensor) -> Tensor:
        return self.projection(self.vit(x_hat_f.clamp(0, 1)))


def _byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE uses for the 256 byte values (printable bytes
    stand for themselves, the others are shifted past 255)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def byte_level_clip_tokenizer():
    """A real CLIPTokenizer over the 256 byte symbols and no merges (tiny text encoders have
    no vocabulary files to download)."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[])


def sd_text_encoder(pretrained: str | None, text_config: dict | None):
    """SD's tokenizer and text encoder (its ``tokenizer``/``text_encoder`` subfolders, local files
    only), or a random CLIP text encoder of ``text_config`` with a byte-level tokenizer (tests)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if text_config is not None:
        return byte_level_clip_tokenizer(), CLIPTextModel(CLIPTextConfig(**plain(text_config)))
    try:
        tokenizer = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", local_files_only=True)
        if architecture_only_build():
            return tokenizer, CLIPTextModel(CLIPTextConfig.from_pretrained(pretrained, subfolder="text_encoder",
                                                                           local_files_only=True))
        return tokenizer, CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(f"cannot load SD's text encoder from {pretrained!r}: {exc}") from None


@register(CODEC)
class TextGuidance(nn.Module):
    """(ii) Text prompt guidance with a fixed prompt: SD's text encoder applied once to
    ``prompt``; the embedding is a buffer (saved with the model), the encoder is not kept. With
    the empty prompt this is the context SD was trained with for unconditional generation
    (OSDiff feeds it to its UNet). The guidance ablation's arm, whose prompt depends on the
    image, is :class:`CaptionGuidance`."""

    uses_fidelity_image = False

    def __init__(
        self,
        context_dim: int,
        prompt: str = "",
        pretrained: str | None = "stabilityai/stable-diffusion-2-1-base",
        text_config: dict | None = None,
        num_tokens: int = 77,
        **_: Any,
    ):
        super().__init__()
        require_int("num_tokens", num_tokens, minimum=1, below=MAX_TOKENS + 1)
        tokenizer, encoder = sd_text_encoder(pretrained, text_config)
        ids = tokenizer(prompt, padding="max_length", max_length=num_tokens, truncation=True, return_tensors="pt")
        with torch.no_grad():
            embedding = encoder(ids.input_ids).last_hidden_state
        if embedding.shape[-1] != context_dim:
            raise ValueError(f"text encoder width {embedding.shape[-1]} != UNet cross-attention width {context_dim}")
        self.register_buffer("embedding", embedding)

    def tokens(self, batch_size: int) -> Tensor:
        return self.embedding.expand(batch_size, -1, -1)

    def forward(self, x_hat_f: Tensor | None, z_hat: Tensor) -> Tensor:
        return self.tokens(z_hat.shape[0])


@register(CODEC)
class TextEncoder(ExternalWeights):
    """SD's frozen text encoder and its tokenizer, kept to encode a prompt per image."""

    def __init__(self, pretrained: str | None = "stabilityai/stable-diffusion-2-1-base",
                 text_config: dict | None = None, num_tokens: int = 77):
        super().__init__()
        require_int("num_tokens", num_tokens, minimum=1, below=MAX_TOKENS + 1)
        self.pretrained_source = pretrained if text_config is None else None
        self.tokenizer, self.model = sd_text_encoder(pretrained, text_config)
        self.model.requires_grad_(False).eval()
        self.num_tokens = num_tokens

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> "TextEncoder":
        return super().train(False)

    def forward(self, prompts: Sequence[str]) -> Tensor:
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.num_tokens, truncation=True,
                             return_tensors="pt").input_ids
        return self.model(ids.to(self.model.device)).last_hidden_state


#: colour names of :class:`ColourCaptioner`, with the RGB each stands for
COLOURS = {"black": (0.05, 0.05, 0.05), "grey": (0.5, 0.5, 0.5), "white": (0.95, 0.95, 0.95),
           "red": (0.8, 0.1, 0.1), "orange": (0.95, 0.55, 0.1), "yellow": (0.95, 0.9, 0.2),
           "green": (0.2, 0.65, 0.2), "cyan": (0.2, 0.8, 0.85), "blue": (0.15, 0.3, 0.85),
           "purple": (0.5, 0.2, 0.65), "pink": (0.95, 0.6, 0.75), "brown": (0.45, 0.3, 0.15)}


@register(CODEC)
class ColourCaptioner(nn.Module):
    """A captioner without weights, the stand-in where no captioning model can be downloaded
    (tests, the miniature tables): the image's brightness and its two most frequent colour names
    (nearest of :data:`COLOURS` per pixel), e.g. ``"a bright photo of blue and green"``. It
    depends on the image as a caption does; it knows nothing of its content."""

    def __init__(self):
        super().__init__()
        self.register_buffer("palette", torch.tensor(list(COLOURS.values())), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[str]:
        pixels = F.interpolate(images.float().clamp(0, 1), size=(32, 32), mode="area").flatten(2).transpose(1, 2)
        nearest = torch.cdist(pixels, self.palette.to(pixels).expand(pixels.shape[0], -1, -1)).argmin(dim=-1)
        names = list(COLOURS)
        captions = []
        for counts, brightness in zip(F.one_hot(nearest, len(names)).sum(dim=1), pixels.mean(dim=(1, 2))):
            first, second = (names[i] for i in counts.argsort(descending=True, stable=True)[:2].tolist())
            light = "dark" if brightness < 0.3 else "bright" if brightness > 0.6 else "dim"
            captions.append(f"a {light} photo of {first} and {second}")
        return captions


@register(CODEC)
class ImageCaptioner(ExternalWeights):
    """A BLIP captioning model (transformers' ``BlipForConditionalGeneration``, e.g.
    ``Salesforce/blip-image-captioning-base``), from local files only, greedy decoding: a caption
    per image in [0, 1]."""

    def __init__(self, pretrained: str = "Salesforce/blip-image-captioning-base", max_new_tokens: int = 20):
        super().__init__()
        from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

        require_int("max_new_tokens", max_new_tokens, minimum=1, below=MAX_CAPTION_TOKENS + 1)
        self.pretrained_source = pretrained
        try:
            self.processor = BlipProcessor.from_pretrained(pretrained, local_files_only=True)
            self.model = (BlipForConditionalGeneration(BlipConfig.from_pretrained(pretrained, local_files_only=True))
                          if architecture_only_build() else
                          BlipForConditionalGeneration.from_pretrained(pretrained, local_files_only=True))
        except (OSError, ValueError) as exc:
            raise MissingWeightsError(
                f"cannot load the captioning model {pretrained!r} from local files: {exc}\nDownload it once "
                f"(`hf download {pretrained}`) into the HF cache, or set its `pretrained` to a local directory."
            ) from None
        self.model.requires_grad_(False).eval()
        self.max_new_tokens = max_new_tokens

    def train(self, mode: bool = True) -> "ImageCaptioner":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[str]:
        inputs = self.processor(images=list(images.float().clamp(0, 1).cpu()), do_rescale=False, return_tensors="pt")
        pixels = inputs.pixel_values.to(device=self.model.device, dtype=self.model.dtype)
        ids = self.model.generate(pixel_values=pixels, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        return [caption.strip() for caption in self.processor.batch_decode(ids, skip_special_tokens=True)]


@register(CODEC)
class CaptionGuidance(nn.Module):
    """(ii) Text prompt guidance whose prompt depends on the image: a caption of x̂_f (which the
    decoder has, so no bits are spent on it) by ``captioner``, through SD's frozen text encoder,
    as OSEDiff (SODEC's code base) prompts its UNet with tags of its own input. Nothing in it
    trains; the caption carries no gradient."""

    uses_fidelity_image = True

    def __init__(self, context_dim: int, captioner: nn.Module, pretrained: str | None = None,
                 text_config: dict | None = None, num_tokens: int = 77, **_: Any):
        super().__init__()
        self.captioner = captioner
        self.text_encoder = TextEncoder(pretrained, text_config, num_tokens)
        if self.text_encoder.hidden_size != context_dim:
            raise ValueError(f"text encoder width {self.text_encoder.hidden_size} != UNet cross-attention width "
                             f"{context_dim}")

    def captions(self, x_hat_f: Tensor) -> list[str]:
        return self.captioner(x_hat_f)

    def forward(self, x_hat_f: Tensor, z_hat: Tensor) -> Tensor:
        return self.text_encoder(self.captions(x_hat_f)).to(x_hat_f.dtype)
