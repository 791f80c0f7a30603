"""ONNX exporter: opset-17 graphs written with `onnx.helper` straight from the model definitions and weights.

Nothing traces tinygrad: each exporter below restates its model's forward (`models/llama.py`, `models/vit.py`,
`models/clip.py`) as ONNX nodes, op for op, so parity (`parity.py`) checks the restatement against the original.
Weights are initializers (linear weights stored transposed, (in, out), so each projection is a plain MatMul that
onnxruntime's quantizer recognises); models over 2 GB go to one external `.data` file beside the graph.

    write_llama_onnx(cfg, weights, "model.onnx", seq_len=None)   # dynamic batch and sequence axes
    write_vit_onnx(cfg, params, "vit.onnx")
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ZeropointError
from ..models.llama import _rope_tables_np

OPSET = 17
IR_VERSION = 8            # the IR that opset 17 shipped with: every onnxruntime since 1.13 reads it
EXTERNAL_DATA_BYTES = 2 * 1024**3 - 64 * 1024**2   # protobuf's 2 GiB cap, less headroom for the graph itself


class ExportError(ZeropointError):
    pass


@dataclass
class Graph:
    """A tiny builder: `g.op("MatMul", a, b)` appends a node and returns its output name."""
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)    # name -> np.ndarray
    n: int = 0

    def init(self, name: str, arr) -> str:
        self.inits[name] = np.ascontiguousarray(arr)
        return name

    def const(self, value, dtype=np.int64) -> str:
        self.n += 1
        return self.init(f"c{self.n}", np.asarray(value, dtype=dtype))

    def op(self, op_type: str, *inputs: str, outs: int = 1, **attrs):
        self.n += 1
        names = [f"{op_type.lower()}_{self.n}" + (f"_{i}" if outs > 1 else "") for i in range(outs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=f"n{self.n}_{op_type}", **attrs))
        return names[0] if outs == 1 else names

    # helpers that restate the model's building blocks
    def linear(self, x: str, w_name: str, w: np.ndarray, b: np.ndarray | None = None) -> str:
        """x @ W.T (+ b) with W in torch's (out, in) layout; stored as W.T so MatMul reads it directly."""
        y = self.op("MatMul", x, self.init(w_name + ".T", np.asarray(w, np.float32).T))
        return y if b is None else self.op("Add", y, self.init(w_name.rsplit(".", 1)[0] + ".bias", np.asarray(b, np.float32)))

    def rms_norm(self, x: str, w_name: str, w: np.ndarray, eps: float) -> str:
        ms = self.op("ReduceMean", self.op("Mul", x, x), axes=[-1], keepdims=1)
        inv = self.op("Reciprocal", self.op("Sqrt", self.op("Add", ms, self.const(eps, np.float32))))
        return self.op("Mul", self.op("Mul", x, inv), self.init(w_name, np.asarray(w, np.float32)))

    def layer_norm(self, x: str, w_name: str, w, b, eps: float) -> str:
        return self.op("LayerNormalization", x, self.init(w_name, np.asarray(w, np.float32)),
                       self.init(w_name + ".bias", np.asarray(b, np.float32)), axis=-1, epsilon=float(eps))

    def gelu_erf(self, x: str) -> str:
        e = self.op("Erf", self.op("Mul", x, self.const(1.0 / math.sqrt(2.0), np.float32)))
        return self.op("Mul", self.op("Mul", x, self.const(0.5, np.float32)), self.op("Add", e, self.const(1.0, np.float32)))

    def quick_gelu(self, x: str) -> str:
        return self.op("Mul", x, self.op("Sigmoid", self.op("Mul", x, self.const(1.702, np.float32))))

    def attention(self, q: str, k: str, v: str, head_dim: int, mask: str | None) -> str:
        """q, k, v: (B, H, T, hd) -> (B, H, T, hd); scores and softmax in fp32, as the models do."""
        s = self.op("Mul", self.op("MatMul", q, self.op("Transpose", k, perm=[0, 1, 3, 2])),
                    self.const(1.0 / math.sqrt(head_dim), np.float32))
        if mask is not None:
            s = self.op("Add", s, mask)
        return self.op("MatMul", self.op("Softmax", s, axis=-1), v)

    def causal_mask(self, positions: str) -> str:
        """(T, T) float mask: -inf where key j > query i, else 0 (built from a position vector, no T^2 initializer)."""
        j = self.op("Unsqueeze", positions, self.const([0]))
        i = self.op("Unsqueeze", positions, self.const([1]))
        return self.op("Where", self.op("Greater", j, i), self.const(-np.inf, np.float32), self.const(0.0, np.float32))

    def model(self, inputs: list, outputs: list, name: str, doc: str = "", metadata: dict | None = None):
        inits = [numpy_helper.from_array(a, n) for n, a in self.inits.items()]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=inits, doc_string=doc)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="zeropoint",
                              ir_version=IR_VERSION)
        for k, v in (metadata or {}).items():
            m.metadata_props.add(key=str(k), value=str(v))
        return m

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.inits.values()))


def _dims(batch: int | None, seq_len: int | None):
    return [batch if batch else "batch", seq_len if seq_len else "seq"]


def save_model(model, path: str | Path, nbytes: int) -> list[Path]:
    """Write the model (external data past the 2 GB protobuf limit) and run the full checker on the file.
    Returns every file written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = [path]
    if nbytes > EXTERNAL_DATA_BYTES:
        data = path.with_name(path.name + ".data")
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        files.append(data)
    else:
        onnx.save_model(model, str(path))
    check(path)
    return files


def check(path: str | Path) -> None:
    """onnx.checker with full_check (strict shape inference); by path, so external data is fine too."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError subclasses
        raise ExportError(f"{path} fails onnx.checker (full_check): {e}") from None


# ---- Llama ----------------------------------------------------------------------------------------------------
def llama_graph(cfg, weights: dict[str, np.ndarray], seq_len: int | None = None, batch: int | None = None) -> Graph:
    """Prefill graph: input_ids int64 (B, T) -> logits fp32 (B, T, V), positions 0..T-1, causal attention.

    `weights` are HF-named fp32 arrays (LoRA already merged). seq_len/batch None = dynamic axis."""
    hd = cfg.head_dim
    max_len = cfg.max_seq_len if seq_len is None else seq_len
    g = Graph()
    W = lambda k: np.asarray(weights[k], np.float32)  # noqa: E731
    emb = g.init("model.embed_tokens.weight", W("model.embed_tokens.weight"))
    x = g.op("Gather", emb, "input_ids", axis=0)                               # (B, T, D)
    T = g.op("Shape", "input_ids", start=1, end=2)                             # [T]
    zero, ax0 = g.const([0]), g.const([0])
    cos_np, sin_np = _rope_tables_np(hd, max_len, float(cfg.rope_theta),
                                     tuple(sorted(cfg.rope_scaling.items())) if cfg.rope_scaling else None)
    cos = g.op("Slice", g.init("rope.cos", cos_np), zero, T, ax0)              # (T, hd)
    sin = g.op("Slice", g.init("rope.sin", sin_np), zero, T, ax0)
    pos = g.op("Slice", g.init("rope.positions", np.arange(max_len, dtype=np.int64)), zero, T, ax0)
    mask = g.causal_mask(pos)
    _decoder(g, cfg, W, emb, x, cos, sin, mask)
    return g


def _decoder(g: Graph, cfg, W, emb: str, x: str, cos: str, sin: str, mask: str, kv_cache: bool = False) -> None:
    """The decoder layers, the final norm and the `logits` output, shared by the prefill and the KV-cache graphs.
    With `kv_cache` each layer's keys and values are appended to `past_key_values.<i>.*` (outputs `present.<i>.*`)
    before attention."""
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    half = g.const([hd // 2, hd // 2])

    def rope(t: str) -> str:                       # HF rotate_half: (-x2, x1)
        x1, x2 = g.op("Split", t, half, axis=-1, outs=2)
        rot = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
        return g.op("Add", g.op("Mul", t, cos), g.op("Mul", rot, sin))

    def heads(t: str, n: int) -> str:              # (B, T, n*hd) -> (B, n, T, hd)
        return g.op("Transpose", g.op("Reshape", t, g.const([0, 0, n, hd])), perm=[0, 2, 1, 3])

    def repeat_kv(t: str) -> str:                  # (B, KV, T, hd) -> (B, H, T, hd), each kv head serving H/KV queries
        if H == KV:
            return t
        t = g.op("Expand", g.op("Unsqueeze", t, g.const([2])), g.const([1, 1, H // KV, 1, 1]))
        return g.op("Reshape", t, g.const([0, H, -1, hd]))

    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        h = g.rms_norm(x, p + "input_layernorm.weight", W(p + "input_layernorm.weight"), cfg.norm_eps)
        q = rope(heads(g.linear(h, p + "self_attn.q_proj.weight", W(p + "self_attn.q_proj.weight")), H))
        k = rope(heads(g.linear(h, p + "self_attn.k_proj.weight", W(p + "self_attn.k_proj.weight")), KV))
        v = heads(g.linear(h, p + "self_attn.v_proj.weight", W(p + "self_attn.v_proj.weight")), KV)
        if kv_cache:                               # attention over the cache and the new positions
            k_all, v_all = f"present.{i}.key", f"present.{i}.value"
            g.nodes.append(_node("Concat", [f"past_key_values.{i}.key", k], [k_all], axis=2))
            g.nodes.append(_node("Concat", [f"past_key_values.{i}.value", v], [v_all], axis=2))
            k, v = k_all, v_all
        a = g.attention(q, repeat_kv(k), repeat_kv(v), hd, mask)
        a = g.op("Reshape", g.op("Transpose", a, perm=[0, 2, 1, 3]), g.const([0, 0, H * hd]))
        x = g.op("Add", x, g.linear(a, p + "self_attn.o_proj.weight", W(p + "self_attn.o_proj.weight")))
        h = g.rms_norm(x, p + "post_attention_layernorm.weight", W(p + "post_attention_layernorm.weight"), cfg.norm_eps)
        gate = g.linear(h, p + "mlp.gate_proj.weight", W(p + "mlp.gate_proj.weight"))
        up = g.linear(h, p + "mlp.up_proj.weight", W(p + "mlp.up_proj.weight"))
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)       # SiLU(gate) * up
        x = g.op("Add", x, g.linear(act, p + "mlp.down_proj.weight", W(p + "mlp.down_proj.weight")))
    x = g.rms_norm(x, "model.norm.weight", W("model.norm.weight"), cfg.norm_eps)
    if cfg.tie_embeddings:   # one copy of the embedding serves Gather and the head
        g.nodes.append(_node("MatMul", [x, g.op("Transpose", emb, perm=[1, 0])], ["logits"]))
    else:
        g.nodes.append(_node("MatMul", [x, g.init("lm_head.weight.T", W("lm_head.weight").T)], ["logits"]))


def _node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, name=f"{outputs[0]}_{op}", **attrs)


def write_llama_onnx(cfg, weights: dict[str, np.ndarray], path: str | Path, seq_len: int | None = None,
                     batch: int | None = None, metadata: dict | None = None) -> dict:
    """Write the Llama prefill graph; returns {"files", "opset", "seq_axis", "nbytes"}."""
    if seq_len is not None and seq_len > cfg.max_seq_len:
        raise ExportError(f"seq_len {seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}; pick a smaller --seq-len")
    g = llama_graph(cfg, weights, seq_len, batch)
    b, t = _dims(batch, seq_len)
    inp = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [b, t])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, t, cfg.vocab_size])
    meta = {"zeropoint.model": "llama", "zeropoint.config": __import__("json").dumps(cfg.to_dict()), **(metadata or {})}
    m = g.model([inp], [out], "zeropoint_llama", "Llama prefill: input_ids -> logits (positions start at 0)", meta)
    files = save_model(m, path, g.nbytes())
    return {"files": [str(f) for f in files], "opset": OPSET, "seq_axis": "dynamic" if seq_len is None else seq_len,
            "nbytes": g.nbytes()}


# ---- Llama with a KV cache (optimum's decoder layout) ------------------------------------------------------
MASK_MIN = float(np.finfo(np.float32).min)   # HF's masked score: finite, so a row with no visible key stays finite


def kv_input_names(cfg) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(cfg.n_layers) for kv in ("key", "value")]


def kv_output_names(cfg) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(cfg.n_layers) for kv in ("key", "value")]


def llama_kv_graph(cfg, weights: dict[str, np.ndarray]) -> Graph:
    """Decoder graph with a KV cache, in the input/output layout optimum's ORTModelForCausalLM and
    onnxruntime-genai use: input_ids, attention_mask (B, past + T; 0 = padding), position_ids (B, T) and
    past_key_values.<i>.key/value (B, KV heads, past, head_dim) in; logits (B, T, V) and present.<i>.key/value
    (B, KV heads, past + T, head_dim) out. The first call passes an empty past (length 0): then it is the
    prefill graph. Query t sees keys 0..past+t that the attention mask keeps (keys by cache index, as HF)."""
    hd = cfg.head_dim
    g = Graph()
    W = lambda k: np.asarray(weights[k], np.float32)  # noqa: E731
    emb = g.init("model.embed_tokens.weight", W("model.embed_tokens.weight"))
    x = g.op("Gather", emb, "input_ids", axis=0)                               # (B, T, D)
    cos_np, sin_np = _rope_tables_np(hd, cfg.max_seq_len, float(cfg.rope_theta),
                                     tuple(sorted(cfg.rope_scaling.items())) if cfg.rope_scaling else None)
    cos = g.op("Unsqueeze", g.op("Gather", g.init("rope.cos", cos_np), "position_ids", axis=0), g.const([1]))
    sin = g.op("Unsqueeze", g.op("Gather", g.init("rope.sin", sin_np), "position_ids", axis=0), g.const([1]))
    scalar = lambda t: g.op("Squeeze", t, g.const([0]))  # noqa: E731
    total = scalar(g.op("Shape", "attention_mask", start=1, end=2))             # past + T
    T = scalar(g.op("Shape", "input_ids", start=1, end=2))
    one = g.const(1)
    keys = g.op("Range", g.const(0), total, one)                                 # key index 0..past+T-1
    queries = g.op("Range", g.op("Sub", total, T), total, one)                   # query index past..past+T-1
    causal = g.op("LessOrEqual", g.op("Unsqueeze", keys, g.const([0])), g.op("Unsqueeze", queries, g.const([1])))
    keep = g.op("And", g.op("Unsqueeze", causal, g.const([0, 1])),               # (B, 1, T, past+T)
                g.op("Unsqueeze", g.op("Cast", "attention_mask", to=TensorProto.BOOL), g.const([1, 2])))
    mask = g.op("Where", keep, g.const(0.0, np.float32), g.const(MASK_MIN, np.float32))
    _decoder(g, cfg, W, emb, x, cos, sin, mask, kv_cache=True)
    return g


def write_llama_onnx_kv(cfg, weights: dict[str, np.ndarray], path: str | Path, metadata: dict | None = None) -> dict:
    """Write the KV-cache decoder graph (`llama_kv_graph`); returns {"files", "opset", "seq_axis", "nbytes"}."""
    g = llama_kv_graph(cfg, weights)
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    cache = ["batch_size", cfg.n_kv_heads, "past_sequence_length", cfg.head_dim]
    present = ["batch_size", cfg.n_kv_heads, "total_sequence_length", cfg.head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", i64, ["batch_size", "sequence_length"])]
    inputs += [helper.make_tensor_value_info(n, f, cache) for n in kv_input_names(cfg)]
    outputs = [helper.make_tensor_value_info("logits", f, ["batch_size", "sequence_length", cfg.vocab_size])]
    outputs += [helper.make_tensor_value_info(n, f, present) for n in kv_output_names(cfg)]
    meta = {"zeropoint.model": "llama", "zeropoint.config": __import__("json").dumps(cfg.to_dict()),
            "zeropoint.layout": "optimum decoder with past_key_values", **(metadata or {})}
    m = g.model(inputs, outputs, "zeropoint_llama_kv", "Llama decoder with KV cache (optimum layout)", meta)
    files = save_model(m, path, g.nbytes())
    return {"files": [str(f) for f in files], "opset": OPSET, "seq_axis": "dynamic", "nbytes": g.nbytes()}


def empty_past(cfg, batch: int = 1) -> dict[str, np.ndarray]:
    """The past_key_values feeds of a first call: every cache of length 0."""
    return {n: np.zeros((batch, cfg.n_kv_heads, 0, cfg.head_dim), np.float32) for n in kv_input_names(cfg)}


def kv_feeds(cfg, tokens: np.ndarray, past: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Feeds for `tokens` (B, T) after `past` (None: the first call), no padding."""
    past = past if past is not None else empty_past(cfg, tokens.shape[0])
    P = next(iter(past.values())).shape[2]
    B, T = tokens.shape
    return {"input_ids": tokens.astype(np.int64), "attention_mask": np.ones((B, P + T), np.int64),
            "position_ids": np.broadcast_to(np.arange(P, P + T, dtype=np.int64), (B, T)).copy(), **past}


# ---- ViT / CLIP towers ---------------------------------------------------------------------------------------
def _block(g: Graph, p: dict, pre: str, x: str, dim: int, heads: int, act: str, eps: float, mask: str | None) -> str:
    """`vit.block`: x + attn(ln1(x)); x + mlp(ln2(x)), fused qkv projection."""
    hd = dim // heads
    h = g.layer_norm(x, pre + "ln1.w", p[pre + "ln1.w"], p[pre + "ln1.b"], eps)
    qkv = g.linear(h, pre + "qkv.w", p[pre + "qkv.w"], p[pre + "qkv.b"])
    qkv = g.op("Transpose", g.op("Reshape", qkv, g.const([0, 0, 3, heads, hd])), perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Squeeze", s, g.const([0])) for s in g.op("Split", qkv, g.const([1, 1, 1]), axis=0, outs=3))
    a = g.attention(q, k, v, hd, mask)
    a = g.op("Reshape", g.op("Transpose", a, perm=[0, 2, 1, 3]), g.const([0, 0, dim]))
    x = g.op("Add", x, g.linear(a, pre + "proj.w", p[pre + "proj.w"], p[pre + "proj.b"]))
    h = g.layer_norm(x, pre + "ln2.w", p[pre + "ln2.w"], p[pre + "ln2.b"], eps)
    h = g.linear(h, pre + "fc1.w", p[pre + "fc1.w"], p[pre + "fc1.b"])
    h = g.gelu_erf(h) if act == "gelu" else g.quick_gelu(h)
    return g.op("Add", x, g.linear(h, pre + "fc2.w", p[pre + "fc2.w"], p[pre + "fc2.b"]))


def vit_features_graph(g: Graph, cfg, p: dict, images: str, prefix: str = "") -> str:
    """`vit.vit_features`: patchify as reshape + matmul, class token, positions, blocks, final norm, pooling."""
    P, C, D, n = cfg.patch_size, cfg.channels, cfg.dim, cfg.image_size // cfg.patch_size
    x = g.op("Reshape", images, g.const([0, C, n, P, n, P]))
    x = g.op("Reshape", g.op("Transpose", x, perm=[0, 2, 4, 1, 3, 5]), g.const([0, n * n, C * P * P]))
    w = np.asarray(p[prefix + "patch.w"], np.float32).reshape(D, -1)
    x = g.linear(x, prefix + "patch.w", w, p.get(prefix + "patch.b"))
    B = g.op("Shape", images, start=0, end=1)
    cls = g.op("Expand", g.init(prefix + "cls", np.asarray(p[prefix + "cls"], np.float32)),
               g.op("Concat", B, g.const([1, D]), axis=0))
    x = g.op("Add", g.op("Concat", cls, x, axis=1), g.init(prefix + "pos", np.asarray(p[prefix + "pos"], np.float32)))
    if cfg.pre_norm:
        x = g.layer_norm(x, prefix + "ln_pre.w", p[prefix + "ln_pre.w"], p[prefix + "ln_pre.b"], cfg.eps)
    for i in range(cfg.depth):
        x = _block(g, p, f"{prefix}blocks.{i}.", x, D, cfg.heads, cfg.act, cfg.eps, None)
    x = g.layer_norm(x, prefix + "norm.w", p[prefix + "norm.w"], p[prefix + "norm.b"], cfg.eps)
    if cfg.pool == "cls":
        return g.op("Squeeze", g.op("Slice", x, g.const([0]), g.const([1]), g.const([1])), g.const([1]))
    return g.op("ReduceMean", g.op("Slice", x, g.const([1]), g.const([cfg.seq_len]), g.const([1])), axes=[1], keepdims=0)


def write_vit_onnx(cfg, params: dict[str, np.ndarray], path: str | Path, metadata: dict | None = None) -> dict:
    """images fp32 (B, C, H, W), already normalised -> logits fp32 (B, num_classes)."""
    if not cfg.num_classes:
        raise ExportError("this ViT config has num_classes=0 (a backbone); export it as part of a CLIP model")
    g = Graph()
    f = vit_features_graph(g, cfg, params, "images")
    g.nodes.append(_node("Add", [g.op("MatMul", f, g.init("head.w.T", np.asarray(params["head.w"], np.float32).T)),
                                 g.init("head.b", np.asarray(params["head.b"], np.float32))], ["logits"]))
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", cfg.channels, cfg.image_size, cfg.image_size])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cfg.num_classes])
    meta = {"zeropoint.model": "vit", "zeropoint.config": __import__("json").dumps(cfg.to_dict()), **(metadata or {})}
    files = save_model(g.model([inp], [out], "zeropoint_vit", "ViT: images -> class logits", meta), path, g.nbytes())
    return {"files": [str(f) for f in files], "opset": OPSET, "nbytes": g.nbytes()}


def write_clip_onnx(cfg, params: dict[str, np.ndarray], path: str | Path, metadata: dict | None = None) -> dict:
    """Both CLIP towers in one graph: images (B, 3, H, W) and input_ids (B, T) -> image_embeds, text_embeds
    (B, embed_dim), projected and not normalised, exactly `clip.encode_image` / `clip.encode_text`."""
    g, t = Graph(), cfg.text
    f32 = lambda k: np.asarray(params[k], np.float32)  # noqa: E731
    img = vit_features_graph(g, cfg.vision, params, "images", prefix="visual.")
    g.nodes.append(_node("MatMul", [img, g.init("visual_proj.T", f32("visual_proj").T)], ["image_embeds"]))
    # text tower: token + position embeddings, causal blocks, final norm, pool at the first end-of-text token
    T = g.op("Shape", "input_ids", start=1, end=2)
    zero = g.const([0])
    pos_ids = g.op("Slice", g.init("text.positions", np.arange(t.context, dtype=np.int64)), zero, T, zero)
    h = g.op("Add", g.op("Gather", g.init("text.tok", f32("text.tok")), "input_ids", axis=0),
             g.op("Slice", g.init("text.pos", f32("text.pos")), zero, T, zero))
    mask = g.causal_mask(pos_ids)
    for i in range(t.depth):
        h = _block(g, params, f"text.blocks.{i}.", h, t.dim, t.heads, t.act, t.eps, mask)
    h = g.layer_norm(h, "text.norm.w", params["text.norm.w"], params["text.norm.b"], t.eps)
    is_eos = g.op("Cast", g.op("Equal", "input_ids", g.const(t.eos_id)), to=TensorProto.FLOAT)
    first = g.op("Mul", is_eos, g.op("Cast", g.op("Equal", g.op("CumSum", is_eos, g.const(1)), g.const(1.0, np.float32)),
                                     to=TensorProto.FLOAT))
    pooled = g.op("ReduceSum", g.op("Mul", g.op("Unsqueeze", first, g.const([-1])), h), g.const([1]), keepdims=0)
    g.nodes.append(_node("MatMul", [pooled, g.init("text_proj.T", f32("text_proj").T)], ["text_embeds"]))
    v = cfg.vision
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", v.channels, v.image_size, v.image_size]),
              helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["text_batch", "seq"])]
    outputs = [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", cfg.embed_dim]),
               helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["text_batch", cfg.embed_dim])]
    meta = {"zeropoint.model": "clip", "zeropoint.config": __import__("json").dumps(cfg.to_dict()), **(metadata or {})}
    files = save_model(g.model(inputs, outputs, "zeropoint_clip", "CLIP image and text towers", meta), path, g.nbytes())
    return {"files": [str(f) for f in files], "opset": OPSET, "nbytes": g.nbytes()}
