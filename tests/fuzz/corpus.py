"""Small, real inputs for the parser tests and the fuzz harness, and seeded mutations of them.

Nothing here is invented from scratch: every seed is cut from a real file that set-up installs.
- GGUF: the SmolLM2-135M GGUF's own metadata (every key; the tokenizer arrays cut to the first 300 tokens and the
  merges among them) and four of its real tensors (two F32 norms, the Q4_1 k/v projections of block 0) with their
  real bytes: ~150 KB instead of 98 MB. `gguf_fields` says where each field sits, so a test patches one field.
- safetensors: all-MiniLM-L6-v2's real header entries for six LayerNorm tensors with their real bytes, and its
  whole real header (104 tensors) over a cut-short data section.
- HF directory: SmolLM2's config as `config_to_hf` writes it (the project's own HF export), the real norm weights
  of the GGUF in model.safetensors, and an index naming the shard.
- YAML: the shipped recipe configs (configs/llm, configs/vision).
"""
from __future__ import annotations

import copy
import functools
import json
import random
import struct
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
STR, ARR = 8, 9
_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
# the value types SmolLM2's file uses for its keys (llama.cpp's converter)
_U32_KEYS = ("block_count", "context_length", "embedding_length", "feed_forward_length", "head_count", "head_count_kv",
             "file_type", "vocab_size", "dimension_count", "token_id", "quantization_version", "alignment")
KEEP_TENSORS = ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight")


def _vtype(key: str, v) -> int:
    if isinstance(v, bool):
        return 7
    if isinstance(v, int):
        return 4 if key.endswith(_U32_KEYS) else 5
    if isinstance(v, float):
        return 6
    if isinstance(v, str):
        return STR
    return ARR


def _value(typ: int, v, out: bytearray, fields: dict, key: str) -> None:
    if typ == STR:
        b = v.encode("utf-8")
        fields.setdefault(("strlen", key), len(out))
        out += struct.pack("<Q", len(b)) + b
    elif typ == ARR:
        sub = 5 if key.endswith("token_type") else STR if all(isinstance(x, str) for x in v) else _vtype(key, v[0])
        fields[("arrtype", key)] = len(out)
        out += struct.pack("<I", sub)
        fields[("arrlen", key)] = len(out)
        out += struct.pack("<Q", len(v))
        for x in v:
            _value(sub, x, out, fields, key + "[]")
    else:
        out += struct.pack(_FMT[typ], v)


def gguf_bytes(kv: list[tuple[str, object]], tensors: list[tuple[str, tuple, int, bytes]], align: int = 32,
               version: int = 3) -> tuple[bytes, dict]:
    """A GGUF v3 file, and {field: byte offset} for every count, length, type and offset in its header."""
    out, fields = bytearray(b"GGUF"), {}
    out += struct.pack("<I", version)
    fields["n_tensors"] = len(out)
    out += struct.pack("<Q", len(tensors))
    fields["n_kv"] = len(out)
    out += struct.pack("<Q", len(kv))
    for key, v in kv:
        kb = key.encode()
        fields[("keylen", key)] = len(out)
        out += struct.pack("<Q", len(kb)) + kb
        typ = _vtype(key, v)
        fields[("vtype", key)] = len(out)
        out += struct.pack("<I", typ)
        fields[("value", key)] = len(out)
        _value(typ, v, out, fields, key)
    offsets, off = [], 0
    for name, dims, typ, data in tensors:
        offsets.append(off)
        off += (len(data) + align - 1) // align * align
    for (name, dims, typ, data), o in zip(tensors, offsets):
        nb = name.encode()
        fields[("tname", name)] = len(out)
        out += struct.pack("<Q", len(nb)) + nb
        fields[("ndims", name)] = len(out)
        out += struct.pack("<I", len(dims))
        fields[("dims", name)] = len(out)
        out += b"".join(struct.pack("<Q", d) for d in dims)
        fields[("ttype", name)] = len(out)
        out += struct.pack("<I", typ)
        fields[("toff", name)] = len(out)
        out += struct.pack("<Q", o)
    out += bytes(-len(out) % align)
    fields["data"] = len(out)
    for (name, dims, typ, data), o in zip(tensors, offsets):
        out += data + bytes(-len(data) % align)
    return bytes(out), fields


@functools.lru_cache(maxsize=1)
def smollm2_parts() -> tuple[list, list]:
    """(kv pairs, tensors) cut from the real SmolLM2 GGUF (see the module docstring)."""
    from zeropoint.data.assets import smollm2_gguf
    from zeropoint.models.gguf import read_header
    path = smollm2_gguf()
    kv, infos, start = read_header(path)
    tokens = kv["tokenizer.ggml.tokens"][:300]
    vocab = set(tokens)
    merges = [m for m in kv["tokenizer.ggml.merges"] if (p := m.split(" ")) and p[0] + p[1] in vocab
              and p[0] in vocab and p[1] in vocab]
    cut = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": kv["tokenizer.ggml.token_type"][:300],
           "tokenizer.ggml.merges": merges}
    pairs = [(k, cut.get(k, v)) for k, v in kv.items() if k != "general.alignment"]
    from tinygrad.llm.gguf import _GGML_NATIVE, _GGML_QUANT   # ggml type -> (elements, bytes) per block
    sizes = {t: (1, dt.itemsize) for t, dt in _GGML_NATIVE.items()} | dict(_GGML_QUANT)
    tensors = []
    with open(path, "rb") as f:
        for name, dims, typ, off in infos:
            if name in KEEP_TENSORS:
                blk, nb = sizes[typ]
                f.seek(start + off)
                tensors.append((name, dims, typ, f.read(int(np.prod(dims)) // blk * nb)))
    return pairs, tensors


def mini_gguf() -> tuple[bytes, dict]:
    return gguf_bytes(*smollm2_parts())


def patch(data: bytes, at: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    b[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(b)


def with_kv(key: str, value) -> bytes:
    """The mini GGUF with one metadata value replaced (None: removed)."""
    kv, tensors = smollm2_parts()
    kv = [(k, value if k == key else v) for k, v in kv if not (k == key and value is None)]
    if value is not None and key not in dict(kv):
        kv.append((key, value))
    return gguf_bytes(kv, tensors)[0]


# ---- safetensors -------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def minilm_header() -> tuple[dict, bytes]:
    """(the real header dict of all-MiniLM-L6-v2's model.safetensors, its raw 8 + header bytes)."""
    from zeropoint.data.assets import minilm_dir
    with open(minilm_dir() / "model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
    return json.loads(raw), struct.pack("<Q", n) + raw


@functools.lru_cache(maxsize=1)
def minilm_small() -> tuple[dict, bytes]:
    """(header, data) of six real LayerNorm tensors of MiniLM, re-offset into a small file."""
    from zeropoint.data.assets import minilm_dir
    header, _ = minilm_header()
    start = len(minilm_header()[1])   # data begins right after the 8-byte length and the header
    names = sorted(k for k in header if "LayerNorm" in k)[:6]
    out, data = {}, bytearray()
    with open(minilm_dir() / "model.safetensors", "rb") as f:
        for k in names:
            a, b = header[k]["data_offsets"]
            f.seek(start + a)
            out[k] = dict(header[k], data_offsets=[len(data), len(data) + b - a])
            data += f.read(b - a)
    if "__metadata__" in header:
        out["__metadata__"] = header["__metadata__"]
    return out, bytes(data)


def safetensors_bytes(header, data: bytes, raw_header: bytes | None = None, length: int | None = None) -> bytes:
    hb = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(hb) if length is None else length) + hb + data


# ---- HF directory --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def hf_parts() -> tuple[dict, dict, bytes, dict]:
    """(config.json dict, safetensors header, data, index) for a directory holding SmolLM2's real norm weights."""
    from zeropoint.models.gguf import config_from_gguf
    from zeropoint.models.hf import config_to_hf
    kv, tensors = smollm2_parts()
    cfg = config_from_gguf(dict(kv))
    cfg.tie_embeddings = True
    conf = config_to_hf(cfg)
    header, data = {}, bytearray()
    for name, dims, typ, raw in tensors:
        if typ == 0:   # the F32 norms
            key = "model.layers.0." + ("input_layernorm" if "attn_norm" in name else "post_attention_layernorm") + ".weight"
            header[key] = {"dtype": "F32", "shape": list(reversed(dims)), "data_offsets": [len(data), len(data) + len(raw)]}
            data += raw
    index = {"metadata": {"total_size": len(data)}, "weight_map": {k: "model-00001-of-00001.safetensors" for k in header}}
    return conf, header, bytes(data), index


def write_hf_dir(d: Path, conf=None, header=None, data=None, index=None, conf_raw: bytes | None = None,
                 index_raw: bytes | None = None, st_raw: bytes | None = None) -> Path:
    c0, h0, d0, i0 = hf_parts()
    d.mkdir(parents=True, exist_ok=True)
    for p in d.iterdir():
        p.unlink()
    (d / "config.json").write_bytes(conf_raw if conf_raw is not None else json.dumps(c0 if conf is None else conf).encode())
    st = st_raw if st_raw is not None else safetensors_bytes(h0 if header is None else header, d0 if data is None else data)
    (d / "model-00001-of-00001.safetensors").write_bytes(st)
    (d / "model.safetensors.index.json").write_bytes(
        index_raw if index_raw is not None else json.dumps(i0 if index is None else index).encode())
    return d


# ---- mutations -----------------------------------------------------------------------------------------------
EXTREME_INTS = [0, 1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**62, 2**63 - 1, 2**63,
                2**64 - 1]
HOSTILE_JSON = [None, True, False, 0, -1, 1, 2**31, 2**64, -2**63, 1e308, -0.0, 0.5, "", "abc", "F32", [], {}, [1, 2, 3],
                ["a", "b"], {"a": 1}, [[[[[]]]]], "\u00e9\u6f22", [0, -8], [2**62, 2**63]]


def mutate_bytes(rng: random.Random, data: bytes, hot: int) -> bytes:
    """One of: flip bits, overwrite a run, truncate, duplicate or delete a slice; biased to the first `hot` bytes."""
    b = bytearray(data)
    pos = lambda: rng.randrange(min(len(b), hot) if rng.random() < 0.8 else len(b)) if b else 0  # noqa: E731
    op = rng.randrange(6)
    if op == 0:
        for _ in range(rng.randint(1, 8)):
            i = pos()
            if b:
                b[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        i = pos()
        b[i:i + rng.randint(1, 16)] = bytes([rng.choice([0, 0xFF, 0x7F, 0x80])]) * rng.randint(1, 16)
    elif op == 2:
        del b[pos():]
    elif op == 3:
        i, j = sorted((pos(), pos()))
        b[j:j] = b[i:j][:4096]
    elif op == 4:
        i = pos()
        del b[i:i + rng.randint(1, 64)]
    else:
        i = pos()
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(b)


def mutate_gguf(seed: int) -> bytes:
    rng = random.Random(seed)
    data, fields = mini_gguf()
    if rng.random() < 0.5:   # structural: one header field set to an extreme
        key = rng.choice(list(fields))
        at = fields[key]
        kind = key[0] if isinstance(key, tuple) else key
        fmt = "<I" if kind in ("vtype", "arrtype", "ndims", "ttype") else "<Q"
        if kind == "data":
            return data[:at + rng.randrange(0, len(data) - at)]
        v = rng.choice(EXTREME_INTS + [rng.randrange(2**32 if fmt == "<I" else 2**64) for _ in range(3)])
        return patch(data, at, fmt, v % (2**32 if fmt == "<I" else 2**64))
    out = data
    for _ in range(rng.randint(1, 3)):
        out = mutate_bytes(rng, out, fields["data"])
    return out


def _random_json(rng: random.Random, depth: int = 0):
    if depth > 3 or rng.random() < 0.6:
        return copy.deepcopy(rng.choice(HOSTILE_JSON))
    if rng.random() < 0.5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["dtype", "shape", "data_offsets", "x", ""]): _random_json(rng, depth + 1) for _ in range(2)}


def _mutate_tree(rng: random.Random, tree):
    """Replace, delete or add one node of a JSON-like tree (in a copy)."""
    tree = copy.deepcopy(tree)
    nodes = [(None, None, tree)]
    stack = [tree]
    while stack:
        t = stack.pop()
        items = t.items() if isinstance(t, dict) else enumerate(t) if isinstance(t, list) else ()
        for k, v in items:
            nodes.append((t, k, v))
            stack.append(v)
    parent, key, _ = rng.choice(nodes)
    if parent is None:
        return _random_json(rng)
    op = rng.randrange(3)
    if op == 0 or isinstance(parent, list) and op == 1:
        parent[key] = _random_json(rng)
    elif op == 1:
        del parent[key]
    else:
        if isinstance(parent, dict):
            parent[rng.choice(["extra", "__metadata__", "dtype", str(rng.random())])] = _random_json(rng)
        else:
            parent.append(_random_json(rng))
    return tree


def mutate_safetensors(seed: int) -> bytes:
    rng = random.Random(seed)
    header, data = minilm_small()
    r = rng.random()
    if r < 0.45:
        return safetensors_bytes(_mutate_tree(rng, header), data)
    if r < 0.55:   # the real full header over a cut-short data section, maybe patched
        _, raw = minilm_header()
        out = raw + data[: rng.randrange(len(data))]
        return mutate_bytes(rng, out, len(raw)) if rng.random() < 0.5 else out
    if r < 0.65:
        return safetensors_bytes(header, data, length=rng.choice(EXTREME_INTS))
    return mutate_bytes(rng, safetensors_bytes(header, data), 8 + len(json.dumps(header)))


YAML_SEEDS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "release")
HOSTILE_YAML_VALUES = ["-1", "0", ".nan", ".inf", "-.inf", "1e308", "1.0e308", "18446744073709551616", "'abc'", "[]",
                       "{}", "null", "true", "[a, b]", "{a: {b: {c: d}}}", "-0.0", "0.5", "999999999999",
                       "&x [1, *x]", "\"\\ud800\"", "!!binary aGVsbG8=", "2001-12-14", "'../x'", "~"]


def mutate_yaml(seed: int) -> bytes:
    import yaml
    rng = random.Random(seed)
    src = (REPO / rng.choice(YAML_SEEDS)).read_text()
    r = rng.random()
    if r < 0.5:   # one value, at any depth, becomes something hostile (written as YAML text, so it parses)
        tree = yaml.load(src, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        paths = []
        stack = [((), tree)]
        while stack:
            p, t = stack.pop()
            items = t.items() if isinstance(t, dict) else enumerate(t) if isinstance(t, list) else ()
            for k, v in items:
                paths.append(p + (k,))
                stack.append((p + (k,), v))
        return _yaml_set(tree, rng.choice(paths), rng.choice(HOSTILE_YAML_VALUES))
    if r < 0.6:
        return src.encode() + rng.choice([b"\nextra_key: 1\n", b"\nrecipe: [a, b]\n", b"\n\x00\x01\x02\n",
                                          "\ndescription: caf\u00e9\n".encode("latin-1"), b"\n&a [*a]\n",
                                          b"\n" + b"[" * 200 + b"]" * 200 + b"\n"])
    return mutate_bytes(rng, src.encode(), len(src))


def _yaml_set(tree, path: tuple, value_text: str) -> bytes:
    """The tree as YAML with the node at `path` replaced by the literal YAML `value_text` (via a flow mapping)."""
    import yaml
    tree = copy.deepcopy(tree)
    node = tree
    for k in path[:-1]:
        node = node[k]
    marker = "__ZP_FUZZ_VALUE__"
    node[path[-1]] = marker
    text = yaml.dump(tree, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                     default_flow_style=True, width=10**6)
    return text.replace(marker, value_text).encode()
