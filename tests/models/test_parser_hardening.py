"""Issue 25 #8 and #9: corrupt GGUF files and wrong-shaped HF inputs, all cut from the real SmolLM2 GGUF and the
real all-MiniLM-L6-v2 safetensors (tests/fuzz/corpus.py), are a ZeropointError naming the file and the problem -
never a struct.error, MemoryError, OverflowError, KeyError, ZeroDivisionError, UnicodeDecodeError, reshape error
or a hang. Every case runs under the fuzz guard (10 s, 1 GiB)."""
from __future__ import annotations

import struct
from pathlib import Path

from tests.fuzz import corpus as C
from tests.fuzz.guard import failures, run_guarded


def gguf_cases() -> dict[str, bytes]:
    data, f = C.mini_gguf()
    tok_at = f[("strlen", "tokenizer.ggml.tokens[]")]          # the first token string
    key_at = f[("keylen", "general.architecture")]
    multibyte = next(i for i in range(f[("arrlen", "tokenizer.ggml.tokens")], f[("tname", C.KEEP_TENSORS[0])])
                     if data[i] >= 0xC2 and data[i + 1] & 0xC0 == 0x80)   # the first 2-byte UTF-8 character
    name0 = C.KEEP_TENSORS[2]                                              # blk.0.attn_k.weight (Q4_1)
    return {
        "empty": b"",
        "cut_in_fixed_header": data[:10],
        "cut_in_a_key": data[:key_at + 12],
        "cut_mid_token_string": data[:tok_at + 9],
        "cut_mid_utf8_character": data[:multibyte + 1],
        "cut_in_tensor_infos": data[:f[("dims", name0)] + 4],
        "cut_in_tensor_data": data[:f["data"] + 1000],
        "bad_magic": b"GGUX" + data[4:],
        "version_99": C.patch(data, 4, "<I", 99),
        "huge_key_length": C.patch(data, key_at, "<Q", 2**62),
        "huge_kv_count": C.patch(data, f["n_kv"], "<Q", 2**63 + 5),
        "huge_tensor_count": C.patch(data, f["n_tensors"], "<Q", 2**40),
        "huge_array_length": C.patch(data, f[("arrlen", "tokenizer.ggml.tokens")], "<Q", 2**40),
        "huge_string_length": C.patch(data, f[("strlen", "general.name")], "<Q", 2**61),
        "value_type_99": C.patch(data, f[("vtype", "general.name")], "<I", 99),
        "array_element_type_99": C.patch(data, f[("arrtype", "tokenizer.ggml.merges")], "<I", 99),
        "tensor_with_1000_dims": C.patch(data, f[("ndims", name0)], "<I", 1000),
        "tensor_dim_2_to_the_60": C.patch(data, f[("dims", name0)], "<Q", 2**60),
        "tensor_type_99": C.patch(data, f[("ttype", name0)], "<I", 99),
        "tensor_offset_past_the_end": C.patch(data, f[("toff", name0)], "<Q", 2**40),
        "zero_heads": C.with_kv("llama.attention.head_count", 0),
        "zero_kv_heads": C.with_kv("llama.attention.head_count_kv", 0),
        "head_count_a_string": C.with_kv("llama.attention.head_count", "nine"),
        "a_billion_layers": C.with_kv("llama.block_count", 10**9),
        "alignment_zero": C.with_kv("general.alignment", 0),
        "no_embedding_length": C.with_kv("llama.embedding_length", None),
        "rope_theta_nan": C.with_kv("llama.rope.freq_base", float("nan")),
        "tokens_not_strings": C.with_kv("tokenizer.ggml.tokens", list(range(300))),
        "bos_id_out_of_range": C.with_kv("tokenizer.ggml.bos_token_id", 10**6),
        "key_not_utf8": data[:key_at + 8] + b"\xff\xfe" + data[key_at + 10:],
    }


def _load(path: Path):
    from zeropoint.models.registry import load_weights_any
    cfg, weights, tok, info = load_weights_any(path)
    return sorted(weights)


def test_corrupt_gguf_files_are_clean_errors_naming_the_file(tmp_path):
    cases = gguf_cases()
    names = list(cases)
    paths = []
    for n in names:
        p = tmp_path / f"{n}.gguf"
        p.write_bytes(cases[n])
        paths.append(p)
    outcomes = run_guarded(_load, paths)
    assert not failures(outcomes, names), "\n".join(failures(outcomes, names))
    for o in outcomes:
        assert o.kind == "clean" and str(paths[o.index]) in o.detail, (names[o.index], o.kind, o.detail)
    # the uncut mini file loads: the cases above fail for their corruption, not for being small
    good = tmp_path / "good.gguf"
    good.write_bytes(C.mini_gguf()[0])
    assert run_guarded(_load, [good])[0].kind == "ok"


def test_truncated_real_smollm2_header_is_named_as_truncated(tmp_path):
    """The real file itself, cut inside its tokenizer array and inside its data (first 2 MB only)."""
    from zeropoint.data.assets import smollm2_gguf
    with open(smollm2_gguf(), "rb") as f:
        head = f.read(2_000_000)
    cuts = {"in_the_merges": head[:1_500_000], "in_the_data": head}
    paths = []
    for n, b in cuts.items():
        paths.append(tmp_path / f"{n}.gguf")
        paths[-1].write_bytes(b)
    outcomes = run_guarded(_load, paths)
    assert not failures(outcomes, list(cuts)), failures(outcomes, list(cuts))
    assert all(o.kind == "clean" and "truncated" in o.detail and str(paths[o.index]) in o.detail for o in outcomes), \
        [o.detail for o in outcomes]


def safetensors_cases() -> dict[str, bytes]:
    header, data = C.minilm_small()
    k = next(iter(k for k in header if k != "__metadata__"))
    edit = lambda **kw: C.safetensors_bytes(dict(header, **{k: dict(header[k], **kw)}), data)  # noqa: E731
    _, real = C.minilm_header()
    return {
        "header_is_a_list": C.safetensors_bytes([1, 2, 3], data),
        "header_is_null": C.safetensors_bytes(None, data),
        "header_is_a_string": C.safetensors_bytes("tensors", data),
        "entry_is_a_list": C.safetensors_bytes(dict(header, **{k: [1, 2]}), data),
        "offsets_as_strings": edit(data_offsets=["0", "1536"]),
        "offsets_reversed": edit(data_offsets=[1536, 0]),
        "offsets_negative": edit(data_offsets=[-1536, 0]),
        "offsets_past_the_end": edit(data_offsets=[0, 10**9]),
        "offsets_one_number": edit(data_offsets=[0]),
        "shape_abc": edit(shape="abc"),
        "shape_negative": edit(shape=[-384]),
        "shape_floats": edit(shape=[384.0]),
        "shape_huge": edit(shape=[2**40, 2**40]),
        "shape_wrong_size": edit(shape=[383]),
        "dtype_unknown": edit(dtype="F8_E9M9"),
        "dtype_a_list": edit(dtype=["F32"]),
        "metadata_not_strings": C.safetensors_bytes(dict(header, __metadata__={"format": 1}), data),
        "header_not_json": C.safetensors_bytes(None, data, raw_header=b"{not json"),
        "header_not_utf8": C.safetensors_bytes(None, data, raw_header=b'{"\xff": 1}'),
        "header_deeply_nested": C.safetensors_bytes(None, data, raw_header=b"[" * 100_000 + b"]" * 100_000),
        "header_length_huge": C.safetensors_bytes(header, data, length=2**63),
        "header_length_past_the_file": C.safetensors_bytes(header, data, length=len(data) + 10**6),
        "too_short": b"\x01\x02",
        "real_header_data_cut": real + data[:100],
    }


def test_wrong_shaped_safetensors_are_clean_errors(tmp_path):
    from zeropoint.models.hf import read_safetensors
    cases = safetensors_cases()
    names = list(cases)
    paths = [tmp_path / f"{n}.safetensors" for n in names]
    for p, n in zip(paths, names):
        p.write_bytes(cases[n])
    outcomes = run_guarded(lambda p: sorted(read_safetensors(p)), paths)
    assert not failures(outcomes, names), "\n".join(failures(outcomes, names))
    for o in outcomes:
        assert o.kind == "clean" and str(paths[o.index]) in o.detail, (names[o.index], o.kind, o.detail)


def hf_dir_cases() -> dict[str, dict]:
    conf, header, data, index = C.hf_parts()
    c = lambda **kw: {"conf": dict(conf, **kw)}  # noqa: E731
    shard = next(iter(index["weight_map"].values()))
    return {
        "config_garbage": {"conf_raw": b"\x00\x01garbage"},
        "config_a_list": {"conf_raw": b"[1, 2, 3]"},
        "config_not_utf8": {"conf_raw": b'{"model_type": "\xff"}'},
        "config_nested_deep": {"conf_raw": b"[" * 100_000},
        "heads_zero": c(num_attention_heads=0),
        "layers_a_billion": c(num_hidden_layers=10**9),
        "layers_1e9_float": c(num_hidden_layers=1e9),
        "hidden_size_abc": c(hidden_size="abc"),
        "vocab_negative": c(vocab_size=-5),
        "eps_a_list": c(rms_norm_eps=[1]),
        "rope_scaling_a_string": c(rope_scaling="llama3"),
        "rope_scaling_missing_keys": c(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
        "max_positions_abc": c(max_position_embeddings="abc"),
        "no_hidden_size": {"conf": {k: v for k, v in conf.items() if k != "hidden_size"}},
        "kv_heads_not_dividing": c(num_key_value_heads=4),
        "index_garbage": {"index_raw": b"{{{{"},
        "index_weight_map_a_list": {"index": {"weight_map": [shard]}},
        "index_shard_a_number": {"index": {"weight_map": {k: 7 for k in index["weight_map"]}}},
        "index_shard_climbs_out": {"index": {"weight_map": {k: "../../etc/passwd" for k in index["weight_map"]}}},
        "index_shard_missing": {"index": {"weight_map": {k: "model-00002-of-00002.safetensors" for k in index["weight_map"]}}},
        "tensor_wrong_shape": {"header": {k: dict(v, shape=[2, 288]) for k, v in header.items()}},
        "shard_truncated": {"data": data[:100]},
    }


def test_wrong_shaped_hf_directories_are_clean_errors(tmp_path):
    cases = hf_dir_cases()
    names = list(cases)
    dirs = [C.write_hf_dir(tmp_path / n, **cases[n]) for n in names]
    outcomes = run_guarded(_load, dirs)
    assert not failures(outcomes, names), "\n".join(failures(outcomes, names))
    for o in outcomes:
        assert o.kind == "clean" and str(dirs[o.index]) in o.detail, (names[o.index], o.kind, o.detail)
    good = C.write_hf_dir(tmp_path / "good")
    ok = run_guarded(_load, [good])[0]
    assert ok.kind == "ok" and ok.detail == sorted(C.hf_parts()[1]), ok.detail


def test_counts_the_file_could_hold_are_still_capped(tmp_path):
    """Lengths a big (here: sparse) file has the bytes for are bounded too: a GGUF array of 17M strings (over the
    16M-value budget) and a 17 MiB safetensors header (over the 16 MiB cap) are refused before being read."""
    from zeropoint.models.hf import read_safetensors
    data, f = C.mini_gguf()
    g = tmp_path / "many.gguf"
    g.write_bytes(C.patch(data, f[("arrlen", "tokenizer.ggml.tokens")], "<Q", 17 << 20))
    st = tmp_path / "big_header.safetensors"
    st.write_bytes(struct.pack("<Q", 17 << 20) + b"{")
    for p in (g, st):
        with open(p, "r+b") as fh:
            fh.truncate(200 << 20)
    outcomes = run_guarded(lambda p: _load(p) if p.suffix == ".gguf" else read_safetensors(p), [g, st])
    assert not failures(outcomes), failures(outcomes)
    assert outcomes[0].kind == "clean" and "over the limit" in outcomes[0].detail, outcomes[0].detail
    assert outcomes[1].kind == "clean" and "impossible" in outcomes[1].detail, outcomes[1].detail


def test_metadata_only_reads_go_through_the_same_bounded_reader(tmp_path):
    """Reading only a GGUF's metadata (a tokenizer, `zpctl export`'s model name) is the one header reader
    stopping early (`read_header(path, tensors=False)`): the corruptions in the metadata are the same clean
    errors naming the file, and no other module parses a GGUF header of its own."""
    from zeropoint.models.registry import load_tokenizer
    cases = gguf_cases()
    names = ["empty", "cut_in_fixed_header", "cut_in_a_key", "cut_mid_token_string", "cut_mid_utf8_character",
             "bad_magic", "version_99", "huge_key_length", "huge_kv_count", "huge_tensor_count", "huge_array_length",
             "huge_string_length", "value_type_99", "array_element_type_99", "key_not_utf8", "tokens_not_strings",
             "bos_id_out_of_range"]
    paths = []
    for n in names:
        paths.append(tmp_path / f"{n}.gguf")
        paths[-1].write_bytes(cases[n])
    outcomes = run_guarded(lambda p: load_tokenizer(p).vocab_size, paths)
    assert not failures(outcomes, names), "\n".join(failures(outcomes, names))
    for o in outcomes:
        assert o.kind == "clean" and str(paths[o.index]) in o.detail, (names[o.index], o.kind, o.detail)
    src = Path(__file__).resolve().parents[2] / "src" / "zeropoint"
    readers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if 'b"GGUF"' in p.read_text(encoding="utf-8"))
    assert readers == ["export/gguf_writer.py", "models/gguf.py"], readers   # the writer writes the magic
