"""The one place where messages known to be harmless are silenced. Importing this module installs
the filters; entry points import it before the libraries that emit them. Every other warning is
fixed at its cause or meant to be read."""

from __future__ import annotations

import logging
import warnings

#: message (a regex matched at its start) → why it is harmless and nothing on our side can fix it
KNOWN_HARMLESS_WARNINGS = {
    r"`torch\.jit\.script` is deprecated": "compressai scripts a helper when imported; we never call it scripted",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated": "inside Lightning's own pytree helper",
    r"Your `IterableDataset` has `__len__` defined": "litdata hands each DataLoader worker its own chunks, so "
                                                     "the length Lightning reads is exact",
    r"Found \d+ module\(s\) in eval mode at the start of training": "the frozen parts (SD's VAE and UNet, a fixed "
                                                                     "D_a) stay in eval mode on purpose",
    r"The parameter 'pretrained' is deprecated since 0\.13": "the lpips package builds torchvision's backbone with "
                                                             "the old argument; we check the backbone's weights file",
    r"Arguments other than a weight enum or `None` for 'weights' are deprecated": "the same call of the lpips package",
    r"pkg_resources is deprecated as an API": "openai-clip, which pyiqa's CLIP-IQA imports, still uses it",
}
#: logger → (the start of a record's message, why it is harmless): records printed through logging, not warnings
KNOWN_HARMLESS_LOG_RECORDS = {
    "pytorch_lightning.utilities.rank_zero": ("💡 Tip", "Lightning's advertisement for its hosted logger, on every run"),
    "bitsandbytes.backends.cpu.ops": (
        "Failed to load CPU gemm_4bit_forward",
        "bitsandbytes (pyiqa's dependency, imported by diffusers' quantizers) looks for a 4-bit CPU kernel on the "
        "Hub when imported; nothing here quantizes to 4 bits"),
    "kernels._internals.hf_hub": (
        "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
        "the same lookup with the Hub offline (HF_HUB_OFFLINE=1)"),
}


def _drop_records_starting(prefix: str):
    return lambda record: not str(record.msg).startswith(prefix)


for _message in KNOWN_HARMLESS_WARNINGS:
    warnings.filterwarnings("ignore", message=_message)
for _logger, (_prefix, _why) in KNOWN_HARMLESS_LOG_RECORDS.items():
    logging.getLogger(_logger).addFilter(_drop_records_starting(_prefix))
