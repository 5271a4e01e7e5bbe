"""An ONNX graph of MPNet (all-mpnet-base-v2) built from its safetensors, with numpy and onnx.

No torch: the weights are read by :func:`read_safetensors` (the format is an 8-byte
little-endian header length, a JSON header mapping each tensor's name to its dtype, shape and
byte range, then the raw bytes) and laid into a graph of standard ONNX operators (opset 20) that
computes what ``transformers``' ``MPNetModel`` does in eval mode:

- positions ``2 .. n + 1`` for a row's ``n`` tokens, counted over the tokens that are not the
  pad id 1 (``padding_idx`` 1 plus the cumulative count), so padding never shifts a position;
- word + position embeddings, LayerNorm (eps 1e-5);
- a T5-style relative attention bias (32 buckets, max distance 128, bidirectional) computed once
  from the token offsets and added, with the attention mask, to every layer's scores;
- 12 post-norm layers of 12-head self-attention and an exact (erf) GELU feed-forward.

The graph's inputs are ``input_ids`` and ``attention_mask`` (int64, ``(batch, length)``); its
outputs are ``last_hidden_state`` and each earlier layer's hidden state ``hidden_state_K``
(K = 1 .. 11), all ``(batch, length, 768)``. The pooler is left out (sentence-transformers
mean-pools the token states).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.errors import PermanentError

__all__ = [
    "HEADS",
    "LAYERS",
    "OPSET",
    "PAD_ID",
    "WIDTH",
    "build_mpnet",
    "externalise",
    "output_name",
    "read_safetensors",
]

LAYERS = 12
HEADS = 12
WIDTH = 768
OPSET = 20  # Gelu is a standard operator from opset 20
_IR_VERSION = 9  # onnx 1.15's, read by every onnxruntime that runs opset 20
PAD_ID = 1
_EPS = 1e-5
_BUCKETS = 32
_MAX_DISTANCE = 128
_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
}

Weights = Mapping[str, npt.NDArray[Any]]


def read_safetensors(data: bytes | memoryview) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a safetensors file's bytes, as read-only numpy views of ``data``."""
    view = memoryview(data)
    if len(view) < 8:
        raise PermanentError("not a safetensors file: shorter than its 8-byte header length")
    (size,) = struct.unpack("<Q", view[:8])
    if size > len(view) - 8:
        raise PermanentError(f"not a safetensors file: header of {size} bytes past the end")
    header = json.loads(bytes(view[8 : 8 + size]))
    body = view[8 + size :]
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:
            raise PermanentError(f"safetensors tensor {name} has unsupported dtype {spec['dtype']}")
        start, end = spec["data_offsets"]
        shape = tuple(spec["shape"])
        if end - start != dtype.itemsize * math.prod(shape) or end > len(body):
            raise PermanentError(f"safetensors tensor {name} has a bad byte range {start}..{end}")
        tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
    return tensors


def relative_bucket(relative: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``MPNetEncoder.relative_position_bucket`` (key offset minus query offset -> bucket), in
    float32 like the original so that the rounding at bucket edges is the same."""
    half = _BUCKETS // 2
    exact = half // 2
    n = -relative
    bucket = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    scaled = np.log(np.maximum(n, 1).astype(np.float32) / np.float32(exact))
    scaled = scaled / np.float32(math.log(_MAX_DISTANCE / exact)) * np.float32(half - exact)
    large = np.minimum(exact + scaled.astype(np.int64), half - 1)
    result: npt.NDArray[np.int64] = bucket + np.where(n < exact, n, large)
    return result


class _Graph:
    """Collects nodes and initializers; names every value it makes."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper  # noqa: PLC0415 - the converter only

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> str:
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        self._count += 1
        name = out or f"{op_type.lower()}_{self._count}"
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), [name], name=f"n{self._count}", **attrs)
        )
        return name

    def linear(self, x: str, weights: Weights, prefix: str, *, scale: float = 1.0) -> str:
        """``x @ W.T + b`` of a torch Linear named ``prefix`` (weight ``(out, in)``)."""
        weight = np.asarray(weights[f"{prefix}.weight"], dtype=np.float32).T * np.float32(scale)
        bias = np.asarray(weights[f"{prefix}.bias"], dtype=np.float32) * np.float32(scale)
        product = self.op("MatMul", x, self.const(f"{prefix}.weight_t", weight))
        return self.op("Add", product, self.const(f"{prefix}.bias", bias))

    def layer_norm(self, x: str, weights: Weights, prefix: str, *, out: str | None = None) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.const(f"{prefix}.weight", weights[f"{prefix}.weight"]),
            self.const(f"{prefix}.bias", weights[f"{prefix}.bias"]),
            out=out,
            axis=-1,
            epsilon=_EPS,
        )


def _embeddings(g: _Graph, w: Weights) -> str:
    words = g.op(
        "Gather", g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"
    )
    real = g.op(
        "Cast", g.op("Not", g.op("Equal", "input_ids", g.const("pad_id", PAD_ID, np.int64))), to=7
    )
    counted = g.op("CumSum", real, g.const("axis_1", 1, np.int64))
    positions = g.op("Add", g.op("Mul", counted, real), g.const("padding_idx", PAD_ID, np.int64))
    table = g.const("position_embeddings", w["embeddings.position_embeddings.weight"])
    summed = g.op("Add", words, g.op("Gather", table, positions))
    return g.layer_norm(summed, w, "embeddings.LayerNorm")


def _attention_bias(g: _Graph, w: Weights) -> str:
    """Relative position bias ``(1, heads, L, L)`` plus the key mask ``(batch, 1, 1, L)``."""
    longest = w["embeddings.position_embeddings.weight"].shape[0] - PAD_ID - 1
    offsets = np.arange(-(longest - 1), longest, dtype=np.int64)
    table = np.asarray(w["encoder.relative_attention_bias.weight"], dtype=np.float32)
    per_offset = table[relative_bucket(offsets)]  # (2 * longest - 1, heads)
    length = g.op("Gather", g.op("Shape", "input_ids"), g.const("one", 1, np.int64), axis=0)
    steps = g.op("Range", g.const("zero", 0, np.int64), length, g.const("step", 1, np.int64))
    keys = g.op("Unsqueeze", steps, g.const("axes_0", [0], np.int64))
    queries = g.op("Unsqueeze", steps, g.const("axes_1", [1], np.int64))
    index = g.op("Add", g.op("Sub", keys, queries), g.const("offset_base", longest - 1, np.int64))
    bias = g.op("Gather", g.const("relative_bias_by_offset", per_offset), index)  # (L, L, heads)
    bias = g.op(
        "Unsqueeze", g.op("Transpose", bias, perm=[2, 0, 1]), g.const("axes_0b", [0], np.int64)
    )
    mask = g.op("Cast", "attention_mask", to=1)
    blocked = g.op(
        "Mul", g.op("Sub", g.const("one_f", 1.0), mask), g.const("lowest", np.finfo(np.float32).min)
    )
    blocked = g.op("Unsqueeze", blocked, g.const("axes_12", [1, 2], np.int64))
    return g.op("Add", bias, blocked, out="attention_bias")


def _layer(g: _Graph, w: Weights, x: str, k: int, bias: str, out: str) -> str:
    p = f"encoder.layer.{k}"
    head = WIDTH // HEADS
    heads_shape = g.const("heads_shape", [0, 0, HEADS, head], np.int64) if k == 0 else "heads_shape"
    width_shape = g.const("width_shape", [0, 0, WIDTH], np.int64) if k == 0 else "width_shape"
    scale = 1.0 / math.sqrt(head)  # 1/8: folded into q exactly (a power of two)
    q = g.linear(x, w, f"{p}.attention.attn.q", scale=scale)
    keys = g.linear(x, w, f"{p}.attention.attn.k")
    v = g.linear(x, w, f"{p}.attention.attn.v")
    q = g.op("Transpose", g.op("Reshape", q, heads_shape), perm=[0, 2, 1, 3])
    keys = g.op("Transpose", g.op("Reshape", keys, heads_shape), perm=[0, 2, 3, 1])
    v = g.op("Transpose", g.op("Reshape", v, heads_shape), perm=[0, 2, 1, 3])
    scores = g.op("Add", g.op("MatMul", q, keys), bias)
    context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), width_shape)
    attended = g.linear(context, w, f"{p}.attention.attn.o")
    x = g.layer_norm(g.op("Add", attended, x), w, f"{p}.attention.LayerNorm")
    inner = g.op("Gelu", g.linear(x, w, f"{p}.intermediate.dense"), approximate="none")
    outer = g.linear(inner, w, f"{p}.output.dense")
    return g.layer_norm(g.op("Add", outer, x), w, f"{p}.output.LayerNorm", out=out)


def output_name(layer: int) -> str:
    """The graph output holding layer ``layer``'s hidden state (1 .. 12; 12 is the last)."""
    return "last_hidden_state" if layer == LAYERS else f"hidden_state_{layer}"


def build_mpnet(weights: Weights) -> Any:
    """The ``onnx.ModelProto`` of MPNet with the given safetensors tensors."""
    from onnx import TensorProto, helper  # noqa: PLC0415 - the converter only

    missing = [
        n
        for n in ("embeddings.word_embeddings.weight", "encoder.relative_attention_bias.weight")
        if n not in weights
    ]
    if missing:
        raise PermanentError(f"the safetensors file has no {', '.join(missing)}: not MPNet")
    g = _Graph()
    x = _embeddings(g, weights)
    bias = _attention_bias(g, weights)
    for k in range(LAYERS):
        x = _layer(g, weights, x, k, bias, output_name(k + 1))
    dims = ["batch", "length"]
    graph = helper.make_graph(
        g.nodes,
        "all-mpnet-base-v2",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, dims)
            for n in ("input_ids", "attention_mask")
        ],
        [
            helper.make_tensor_value_info(output_name(k), TensorProto.FLOAT, [*dims, WIDTH])
            for k in (LAYERS, *range(1, LAYERS))
        ],
        g.initializers,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ragc",
        ir_version=_IR_VERSION,
    )


def externalise(model: Any, location: str, *, align: int = 4096) -> list[bytes]:
    """Move ``model``'s initializers of 1 KiB or more out of the proto, to be stored in the file
    ``location`` beside it (each at an ``align``-byte offset, so onnxruntime can map them
    rather than parse and copy them); returns that file's content as chunks, in order."""
    from onnx import TensorProto, external_data_helper  # noqa: PLC0415 - the converter only

    chunks: list[bytes] = []
    offset = 0
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) < 1024:
            continue
        raw = tensor.raw_data
        padding = -offset % align
        chunks.append(bytes(padding))
        offset += padding
        external_data_helper.set_external_data(tensor, location, offset=offset, length=len(raw))
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        chunks.append(raw)
        offset += len(raw)
    return chunks
