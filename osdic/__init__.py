"""osdic: the library of the one-step diffusion image compression framework — codecs
(``osdic.models``), entropy coding and bitstreams (``osdic.codec``), metrics (``osdic.metrics``),
image reading (``osdic.images``) and helpers (``osdic.utils``). Usable without Lightning or Hydra,
as compressai is; the training side (``lightning_modules``, ``datamodules``, ``callbacks``,
``train.py``) builds on it, never the reverse (``python bench/import_graph.py --check``)."""

from pathlib import Path

#: the checkout the package is installed from in editable mode (``pip install -e .``): conf/,
#: the caches and the logs live there
PROJECT_ROOT = Path(__file__).resolve().parent.parent
