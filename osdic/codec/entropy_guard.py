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

How a codec gets this: :func:`guard_entropy_coders` replaces the coder of every compressai
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

from compressai.entropy_models import EntropyModel
from torch import nn

from osdic.codec.bitstream import BitstreamError

WORD_BYTES = 4
#: the encoder's flush: the final 64-bit state
MIN_STRING_WORDS = 2


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

    def encode_with_indexes(self, *args, **kwargs):
        return self._coder.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, string, indexes, *tables, **kwargs):
        return self._coder.decode_with_indexes(guarded_string(string, len(indexes)), indexes, *tables, **kwargs)


def guard_entropy_coders(module: nn.Module) -> nn.Module:
    """Install a :class:`GuardedEntropyCoder` on every compressai ``EntropyModel`` in ``module``
    (idempotent); returns ``module``."""
    for entropy_model in module.modules():
        if isinstance(entropy_model, EntropyModel) and not isinstance(entropy_model.entropy_coder, GuardedEntropyCoder):
            entropy_model.entropy_coder = GuardedEntropyCoder(entropy_model.entropy_coder)
    return module
