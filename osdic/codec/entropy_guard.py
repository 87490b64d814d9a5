"""Entropy decoding of untrusted strings without reading outside them.

compressai's rANS decoder (``compressai.ans``: ryg's Rans64, 32-bit words, 16-bit frequencies,
escape codes in 4-bit fields for values outside a CDF's range) reads its string through a raw
pointer with no bounds check. A hostile, empty or truncated string makes it read past the end:
a crash, or an output that depends on whatever memory follows (a different image on every call).

The decoder cannot be stopped at the end of its string, but how far it can read is bounded by
the string's length and the number of symbols, so :func:`guarded_string` checks the length is one
the encoder can emit and appends that many zero words: every read then stays inside the buffer,
and the output depends on the bytes of the file alone. Reads, in 32-bit words, for ``n``
symbols from a string of ``w`` words:

- 2 to start; at most 1 per symbol for its rANS step;
- an escape (the symbol after the last in-range one) then reads 4-bit fields: a count that goes
  on while each field is 15, then as many value fields as the count fields add up to. Once the
  state is normalised (≥ 2^31, which no step undoes) a word is read at most once every 8 fields,
  at most 9 fields come from the state before one is read, a zero padding word ends the count
  (its first field is 0) and a string word adds at most 8 fields of 15. With k string words read
  meanwhile, an escape has c ≤ 9 + 8·k continued count fields, ≤ 15·c + 14 value fields,
  ≤ 16·c + 15 fields in all, and so reads ≤ 2·c + 2 ≤ 20 + 16·k words;
- a state below 2^31 (hostile start words) reads a word per field but stays there only on string
  words below 16 or on zero words (whose fields are 0): ≤ 30 words per string word in all.

In all ≤ 2 + 21·n + 30·w words (``max_words_read``). A genuine string is never read past its
end, so padding leaves its symbols unchanged.

The coder also reads its CDF tables (``_quantized_cdf``, ``_cdf_length``, ``_offset``) unchecked: a
row shorter than its declared length reads past the table, a zero row divides by zero. A codec
package's tables are therefore never used: :func:`rebuild_entropy_tables` computes them from the
model's own parameters (the bottlenecks' quantiles and densities, the Gaussian scale table of the
code) once the quantiles are checked, then checks every row: a length within the row, a CDF from
0 rising strictly to 2^16.

The encoder is guarded too: compressai's escape coding of an out-of-range symbol loops forever on
a value whose doubling overflows (a NaN latent quantises to −2^31), so a symbol beyond ±2^24 —
which only a broken or hostile package produces — raises :class:`EncodingError` instead.

How a codec gets the string guard: :func:`guard_entropy_coders` replaces the coder of every compressai
``EntropyModel`` in a module (``EntropyBottleneck``, ``GaussianConditional`` and everything
built on them: the hyperprior, and ``compressai.latent_codecs``' channel groups and checkerboard,
which decode through ``GaussianConditional.decompress``) that is a registered submodule.
``decompress_outputs`` calls it on every codec before decoding a file, so a new entropy model
made of those parts is covered without any change. compressai's serial autoregressive decoders (``RasterScanLatentCodec``,
``JointAutoregressiveHierarchicalPriors``) build their own ``RansDecoder``; a model using one
must pass its string through :func:`guarded_string` (with the total number of symbols) before
``set_stream``.
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck, EntropyModel
from torch import nn

from osdic.codec.bitstream import BitstreamError

WORD_BYTES = 4
#: the encoder's flush: the final 64-bit state
MIN_STRING_WORDS = 2
#: the largest symbol magnitude the encoder is given: its escape coding loops forever on a value
#: whose sign doubling overflows (a NaN latent becomes −2^31), and no trained latent comes near
MAX_SYMBOL = 1 << 24


class EncodingError(ValueError):
    """A latent the entropy coder cannot code (not finite, or absurdly large)."""


def max_string_words(symbols: int) -> int:
    """The longest string compressai's encoder emits for ``symbols`` symbols: it writes into a
    buffer of one word per symbol (anything longer would have overrun it), flush included."""
    return symbols + MIN_STRING_WORDS


def max_words_read(string_words: int, symbols: int) -> int:
    """How many words the decoder can read for ``symbols`` symbols from a string this long,
    whatever its content, when the string is followed by zero words (derivation above)."""
    return 2 + 21 * symbols + 30 * string_words


def guarded_string(string: bytes, symbols: int) -> bytes:
    """``string`` zero-padded so decoding ``symbols`` symbols cannot read past it; raises
    :class:`BitstreamError` when no encoder output has this length."""
    length = len(string)
    if length % WORD_BYTES:
        raise BitstreamError(f"entropy-coded string of {length} bytes: rANS strings are whole 32-bit words")
    words = length // WORD_BYTES
    if not MIN_STRING_WORDS <= words <= max_string_words(symbols):
        raise BitstreamError(
            f"entropy-coded string of {length} bytes for {symbols} symbols: the encoder writes "
            f"{MIN_STRING_WORDS * WORD_BYTES} to {max_string_words(symbols) * WORD_BYTES} bytes"
        )
    return bytes(string) + bytes((max_words_read(words, symbols) - words) * WORD_BYTES)


class GuardedEntropyCoder:
    """Stands in for compressai's ``_EntropyCoder`` on an ``EntropyModel``: encodes with it,
    decodes through :func:`guarded_string`."""

    def __init__(self, coder):
        if coder.name != "ans":
            raise ValueError(f"only compressai's 'ans' coder can be guarded, not {coder.name!r}")
        self.name = coder.name
        self._coder = coder
        # compressai's mixture model calls the proxy's encoder/decoder attributes directly
        self._encoder, self._decoder = coder._encoder, self

    def encode_with_indexes(self, symbols, *args, **kwargs):
        if any(not -MAX_SYMBOL <= symbol <= MAX_SYMBOL for symbol in symbols):
            raise EncodingError(f"a latent symbol outside ±{MAX_SYMBOL} (or not finite) cannot be coded: the codec "
                                f"package is broken or hostile")
        return self._coder.encode_with_indexes(symbols, *args, **kwargs)

    def decode_with_indexes(self, string, indexes, *tables, **kwargs):
        return self._coder.decode_with_indexes(guarded_string(string, len(indexes)), indexes, *tables, **kwargs)


def guard_entropy_coders(module: nn.Module) -> nn.Module:
    """Install a :class:`GuardedEntropyCoder` on every compressai ``EntropyModel`` in ``module``
    (idempotent); returns ``module``."""
    for entropy_model in module.modules():
        if isinstance(entropy_model, EntropyModel) and not isinstance(entropy_model.entropy_coder, GuardedEntropyCoder):
            entropy_model.entropy_coder = GuardedEntropyCoder(entropy_model.entropy_coder)
    return module


#: the coder's CDF precision: every table ends at 2^16
CDF_TOTAL = 1 << 16
#: the longest pmf a bottleneck channel may span (quantile range): a CDF longer than 2^16 − 1 cannot
#: give every symbol a frequency of at least 1
MAX_PMF_LENGTH = CDF_TOTAL - 1
#: names of the coding tables, rebuilt at load and never read from a file
TABLE_BUFFERS = ("_quantized_cdf", "_cdf_length", "_offset", "scale_table")


class EntropyTableError(ValueError):
    """A model's parameters give coding tables the C++ coder cannot use safely."""


def _check_quantiles(name: str, bottleneck: EntropyBottleneck) -> None:
    quantiles = bottleneck.quantiles.detach()
    if not torch.isfinite(quantiles).all():
        raise EntropyTableError(f"{name}: the entropy bottleneck's quantiles are not all finite")
    low, median, high = quantiles[:, 0, 0], quantiles[:, 0, 1], quantiles[:, 0, 2]
    if not ((low <= median) & (median <= high)).all():
        raise EntropyTableError(f"{name}: the entropy bottleneck's quantiles are out of order")
    span = torch.ceil(median - low) + torch.ceil(high - median) + 1
    if span.max() > MAX_PMF_LENGTH:
        raise EntropyTableError(f"{name}: a quantile range of {int(span.max())} symbols; at most {MAX_PMF_LENGTH} "
                                f"can be coded with 16-bit frequencies")


def check_tables(name: str, entropy_model: EntropyModel) -> None:
    """Every row of the model's tables usable by the coder: its length within the row, its CDF
    starting at 0 and rising strictly to 2^16 there."""
    cdf, lengths, offsets = entropy_model._quantized_cdf, entropy_model._cdf_length, entropy_model._offset
    if cdf.dim() != 2 or lengths.shape != (cdf.shape[0],) or offsets.shape != (cdf.shape[0],) or cdf.shape[0] == 0:
        raise EntropyTableError(f"{name}: coding tables of shapes {tuple(cdf.shape)}, {tuple(lengths.shape)}, "
                                f"{tuple(offsets.shape)} do not fit together")
    lengths, cdf = lengths.long(), cdf.long()
    if not ((lengths >= 2) & (lengths <= cdf.shape[1])).all():
        raise EntropyTableError(f"{name}: a CDF length outside its row of {cdf.shape[1]}")
    positions = torch.arange(cdf.shape[1]).expand_as(cdf)
    inside = positions < lengths[:, None]
    rising = (cdf[:, 1:] > cdf[:, :-1]) | ~inside[:, 1:]
    ends = cdf.gather(1, (lengths - 1)[:, None]).squeeze(1)
    if not ((cdf[:, 0] == 0).all() and rising.all() and (ends == CDF_TOTAL).all()):
        raise EntropyTableError(f"{name}: a CDF that does not rise from 0 to 2^16")


def rebuild_entropy_tables(module: nn.Module, update) -> None:
    """The coding tables of every compressai ``EntropyModel`` in ``module`` rebuilt by ``update``
    (the codec's own ``update(force=True)``) from its parameters, after checking the quantiles,
    then checked. Raises :class:`EntropyTableError` naming the model."""
    for name, entropy_model in module.named_modules():
        if isinstance(entropy_model, EntropyBottleneck):
            _check_quantiles(name, entropy_model)
    update()
    for name, entropy_model in module.named_modules():
        if isinstance(entropy_model, EntropyModel):
            check_tables(name, entropy_model)
