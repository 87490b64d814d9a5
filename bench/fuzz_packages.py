"""Fuzz codec packages as an attacker would: every hostile package must be refused with one clear
error, or load and then code an image the same way twice — never crash, hang, allocate without
bound, touch the network or run code of its own.

    python bench/fuzz_packages.py --packages 10000 [--seed 0] [--timeout 30] [--memory-gb 2]

Seeds are genuine packages of test size: a HiFiC (hyperprior), an OSDiff (ELIC's channel groups
and checkerboard, a control module, a text context) and a SODEC (FGM over a ViT). Each package
is mutated with its fingerprint recomputed (as anyone can): ``codec.json`` values set to edge
numbers, other types, other allowed classes or none, keys deleted or added, deep nesting, the
file truncated or replaced by a list; ``pretrained`` pointed at a Hub id (which must not be
fetched) or at a local folder whose model ships its own code (which must not run, even with
"y" on stdin); tensors in ``weights.safetensors`` reshaped, retyped, or filled with NaN, infinities,
zeros or huge values — the entropy coder's tables (one CDF row for many indexes, zeroed rows with
a huge length) and the bottleneck's quantiles among them. Each package is loaded in a child
process forked for it, with the network cut (a name lookup or socket connect is recorded and refused), under a
memory limit and a timeout; a loaded package compresses a small image and decompresses the file
twice. Prints the counts: refused (with a histogram of the reasons), loaded and deterministic,
non-deterministic, other exceptions, crashes, timeouts, network attempts, code runs.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import collections
import copy
import hashlib
import json
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from forked import fuzz_parser, run_forked
from osdic.checks import ConfigError, MissingWeightsError
from osdic.codec.bitstream import BitstreamError
from osdic.codec.entropy_guard import EncodingError
from osdic.codec.image_codec import compress_image, decompress_bytes
from osdic.codec.package import CONFIG_FILE, WEIGHTS_FILE, PackageError, _fingerprint, export_package, load_package
from osdic.utils.untrusted import UntrustedFileError

REFUSALS = (PackageError, UntrustedFileError, MissingWeightsError, ConfigError, BitstreamError, EncodingError)
MARKER_NAME = "remote-code-ran"
EDGE_INTS = [0, -1, 1, 2, 3, 7, 64, 30000, 65536, 1 << 31, -(1 << 31), 1 << 62]
EDGE_FLOATS = [0.0, -1.0, 1e-30, 1e30, float("inf"), float("-inf"), float("nan")]


def seed_packages(root: Path) -> dict[str, Path]:
    """Genuine packages of test size (the tables' test scale, conf/scale/test.yaml), built as the
    training configs build them."""
    from tables.graph import compose_config_for, merged
    from training.config import instantiate_node

    scale = compose_config_for("tables", ["table=gan_weight", "scale=test"], None).scale
    out = {}
    for name, experiment, stage in [("hific", "sodec_stage1", "stage1"), ("osdiff", "osdiff", "osdiff"),
                                    ("sodec", "sodec_stage2", "stage2")]:
        overrides = merged([f"experiment={experiment}"], scale.overrides, scale.stage_overrides[stage],
                           ["model.init_from=random"] if stage == "stage2" else [])
        torch.manual_seed(0)
        module = instantiate_node(compose_config_for("train", overrides, str(root / name)).model, "model")
        out[name] = export_package(module.codec.eval(), root / name, module.stage)
    return out


def remote_code_folder(root: Path) -> Path:
    """A model folder whose config asks transformers to run the folder's own Python file."""
    folder = root / "remote-code-model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "hostile", "auto_map": {"AutoConfig": "hostile.HostileConfig", "AutoModel": "hostile.HostileModel"},
        "hidden_size": 8}))
    (folder / "hostile.py").write_text(f"open({str(root / MARKER_NAME)!r}, 'w').write('ran')\n")
    for subfolder in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        (folder / subfolder).mkdir(exist_ok=True)
        (folder / subfolder / "config.json").write_text((folder / "config.json").read_text())
    return folder


def _paths(value, prefix=()):
    """Every (path, leaf) of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))
    yield prefix, value


def _set(config, path, value) -> None:
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _delete(config, path) -> None:
    node = config
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def mutate_config(manifest: dict, rng: random.Random, hostile_folder: Path) -> tuple[str, dict | str]:
    manifest = copy.deepcopy(manifest)
    codec = manifest["codec"]
    paths = [p for p, _ in _paths(codec) if p]
    how = rng.choice(["int", "float", "type", "delete", "add", "target", "pretrained", "nest", "text", "top"])
    path = rng.choice(paths)
    if how == "int":
        ints = [p for p, v in _paths(codec) if p and isinstance(v, int) and not isinstance(v, bool)]
        target, value = rng.choice(ints) if ints else path, rng.choice(EDGE_INTS)
        _set(codec, target, value)
        how = f"int:{'.'.join(map(str, target))}={value}"
    elif how == "float":
        floats = [p for p, v in _paths(codec) if p and isinstance(v, float)]
        target, value = rng.choice(floats) if floats else path, rng.choice(EDGE_FLOATS)
        _set(codec, target, value)
        how = f"float:{'.'.join(map(str, target))}={value}"
    elif how == "type":
        _set(codec, path, rng.choice([None, True, "x" * rng.randint(0, 64), [], {}, [1, 2, 3], {"a": 1}, -3.5]))
    elif how.startswith("delete"):
        _delete(codec, path)
    elif how == "add":
        parent = path[:-1]
        node = codec
        for key in parent:
            node = node[key]
        if isinstance(node, dict):
            node[rng.choice(["extra", "_args_", "_recursive_", "_partial_", "_convert_"])] = rng.choice([1, True, "x"])
    elif how == "target":
        targets = [p for p, v in _paths(codec) if p and p[-1] == "_target_"]
        choices = ["osdic.models.hific.HiFiCCompressor", "osdic.models.sodec.SODEC", "osdic.models.osdiff.OSDiff",
                   "osdic.models.entropy.ElicEntropyModel", "osdic.models.guidance.ImageCaptioner",
                   "builtins.eval", "os.system", "subprocess.run", "pickle.loads", None]
        _set(codec, rng.choice(targets), rng.choice(choices))
    elif how == "pretrained":
        keys = [p for p, v in _paths(codec) if p and p[-1] in ("pretrained", "config", "text_config", "unet_config")]
        target = rng.choice(keys) if keys else ("backbone", "pretrained")
        value = rng.choice(["someone/model", str(hostile_folder), "/nonexistent/model", "../../etc"])
        if target[-1] != "pretrained":
            target = (*target[:-1], "pretrained")
            _set(codec, target[:-1] + ("config",), None) if target[:-1] else None
        try:
            _set(codec, target, value)
        except (KeyError, TypeError, IndexError):
            codec["pretrained"] = value
    elif how == "nest":  # written as text: deeper than json.dumps itself can go
        depth = rng.choice([40, 1000, 100000])
        _set(codec, path, "@NESTED@")
        return how, json.dumps(manifest).replace('"@NESTED@"', "[" * depth + "]" * depth)
    elif how == "text":
        text = json.dumps(manifest)
        return how, text[: rng.randrange(len(text))] if rng.random() < 0.5 else text.replace('"', "'", 1)
    elif how == "top":
        return how, rng.choice([[manifest], "string", 42, None, {"format": 1}])
    return how, manifest


def mutate_weights(state: dict, rng: random.Random) -> tuple[str, dict]:
    state = dict(state)
    tables = [k for k in state if k.rsplit(".", 1)[-1] in ("_quantized_cdf", "_cdf_length", "_offset", "scale_table")]
    quantiles = [k for k in state if k.endswith("quantiles")]
    how = rng.choice(["values", "shape", "dtype", "table", "table", "quantiles", "delete", "add"])
    key = rng.choice(sorted(state))
    tensor = state[key]
    how = f"{how}:{key}"
    if how.startswith("values"):
        fill = rng.choice([float("nan"), float("inf"), 0.0, 1e30, -1e30])
        state[key] = torch.full_like(tensor, fill) if tensor.is_floating_point() else torch.full_like(tensor, -1)
    elif how.startswith("shape"):
        shape = list(tensor.shape) or [1]
        axis = rng.randrange(len(shape))
        shape[axis] = rng.choice([0, 1, shape[axis] + 1, max(shape[axis] - 1, 0), shape[axis] * 8])
        state[key] = torch.zeros(shape, dtype=tensor.dtype)
    elif how.startswith("dtype"):
        state[key] = tensor.to(rng.choice([torch.float64, torch.float16, torch.int32, torch.int64, torch.uint8]))
    elif how.startswith("table") and tables:
        key = rng.choice(tables)
        if key.endswith("_quantized_cdf"):
            state[key] = rng.choice([torch.zeros(1, 64, dtype=torch.int32), torch.zeros_like(state[key]),
                                     torch.full_like(state[key], 1 << 20)])
        elif key.endswith("_cdf_length"):
            state[key] = torch.full_like(state[key], rng.choice([0, 1, 50_000_000, -5]))
        else:
            state[key] = torch.full_like(state[key], rng.choice([-1e9, 1e9, 0]))
    elif how.startswith("quantiles") and quantiles:
        key = rng.choice(quantiles)
        q = state[key].clone()
        q[..., rng.randrange(3)] = rng.choice([1e9, -1e9, float("nan"), 0.0])
        state[key] = q
    elif how.startswith("delete"):
        del state[key]
    else:
        state[f"extra.{rng.randrange(1000)}"] = torch.zeros(rng.choice([1, 1000]))
    return how, state


def _load_and_code(package: str, image: torch.Tensor) -> tuple[str, str, list]:
    """In the forked child, with the network cut: load the package, code an image, decode it twice."""
    network = []

    def refuse_connect(self, address, *args, **kwargs):
        network.append(str(address))
        raise OSError("network cut by the fuzzer")

    def refuse_lookup(host, *args, **kwargs):  # a name lookup comes first: a machine without DNS never connects
        network.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "network cut by the fuzzer")

    socket.socket.connect = refuse_connect
    socket.getaddrinfo = refuse_lookup
    sys.stdin = open(os.devnull)  # a prompt to run remote code reads "" (and a "y" would be the test's)
    try:
        codec, fingerprint = load_package(package)
        data = compress_image(codec, fingerprint, image)
        first = decompress_bytes(codec, fingerprint, data)
        second = decompress_bytes(codec, fingerprint, data)
        same = first.numpy().tobytes() == second.numpy().tobytes()  # bitwise
        outcome, detail = ("loaded", "") if same else ("nondeterministic", hashlib.sha1(data).hexdigest()[:8])
    except REFUSALS as exc:
        outcome, detail = "refused", type(exc).__name__ + ": " + str(exc).split(":")[-1].strip()[:50]
    except BaseException as exc:  # noqa: BLE001 — what the fuzz looks for
        outcome, detail = "exception", f"{type(exc).__name__}: {str(exc)[:150]}"
    return outcome, detail, network


def write_package(folder: Path, manifest, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = save({k: v.contiguous() for k, v in state.items()})
    (folder / WEIGHTS_FILE).write_bytes(weights)
    if isinstance(manifest, dict) and isinstance(manifest.get("codec"), dict):
        try:
            manifest["fingerprint"] = _fingerprint(manifest["codec"], weights).hex()
        except (TypeError, ValueError, RecursionError):
            pass
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (folder / CONFIG_FILE).write_text(text)


def main(argv: list[str] | None = None) -> dict:
    args = fuzz_parser(__doc__.splitlines()[0], "--packages", 1000, 30.0).parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)  # no OpenMP pool in the parent: a forked child's first parallel region would hang
    rng = random.Random(args.seed)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(args.seed))
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    failures, network_attempts = [], 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        seeds = seed_packages(root / "seeds")
        hostile = remote_code_folder(root)
        originals = {name: (json.loads((path / CONFIG_FILE).read_text()), load_file(str(path / WEIGHTS_FILE)))
                     for name, path in seeds.items()}
        for number in range(args.packages):
            name = rng.choice(sorted(originals))
            manifest, state = originals[name]
            if rng.random() < 0.5:
                how, manifest = mutate_config(manifest, rng, hostile)
            else:
                how, state = mutate_weights(state, rng)
                manifest = copy.deepcopy(manifest)
            package = root / "package"
            write_package(package, manifest, state)
            outcome, detail, network = run_forked(_load_and_code, (str(package), image), args.timeout,
                                                  int(args.memory_gb * 2**30))
            counts[outcome] += 1
            network_attempts += bool(network)  # None: the child never reported
            if outcome == "refused":
                reasons[detail.split(":")[0]] += 1
            elif outcome != "loaded":
                failures.append(f"{name}/{how} #{number}: {outcome} {detail}")
            if network:
                failures.append(f"{name}/{how} #{number}: network {network[:2]}")
            if (number + 1) % max(1, args.packages // 10) == 0:
                print(f"[fuzz_packages] {number + 1}/{args.packages}, {time.perf_counter() - start:.0f} s", flush=True)
        code_ran = (root / MARKER_NAME).exists()
    print(f"{args.packages} packages from {len(originals)} seeds ({', '.join(sorted(originals))}), seed {args.seed}:")
    for outcome in ("loaded", "refused", "nondeterministic", "exception", "crash", "timeout"):
        print(f"  {outcome}: {counts[outcome]}")
    print(f"  network attempts: {network_attempts}\n  code run: {int(code_ran)}")
    print("  refusals: " + ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common(8)))
    for failure in failures[:20]:
        print(f"  FAIL {failure}")
    return {"counts": dict(counts), "failures": failures, "code_ran": code_ran}


if __name__ == "__main__":
    result = main()
    raise SystemExit(1 if result["failures"] or result["code_ran"] else 0)
