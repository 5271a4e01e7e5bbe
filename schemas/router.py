"""The L2 question router: features, model and prediction, shared by training and serving.

Features are hashed word 1-2-grams and in-word character 3-5-grams of the canonical question,
with sublinear term frequency, IDF weights and L2 normalisation, and optionally the question's
sentence vector. Routers written since router version 4 hold two linear softmax heads, one per
feature block, and average their probabilities (``combine="mean"``, the n-gram head weighted by
``words_weight``, tuned at compile time): the heads err on different questions, so where they
disagree neither is confident and the router abstains. Older routers
hold one softmax over both blocks (``combine="joint"``) and still load. A router is stored as
``.npz`` arrays plus a JSON header (never pickle) and predicts with numpy alone, so the service
needs no ML library.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.arrays import Floats
from schemas.errors import CorruptSnapshotError
from schemas.features import hashed_features
from schemas.risk import estimated_wrong_rate

__all__ = [
    "OUT_OF_SCOPE",
    "ROUTER_BLOB",
    "Prediction",
    "RouterHeader",
    "RouterModel",
    "best_per_class",
]

OUT_OF_SCOPE: Final = "__out_of_scope__"
ROUTER_BLOB: Final = "router.npz"


def best_per_class(scores: Floats, labels: npt.NDArray[np.int64], classes: int) -> Floats:
    """For scores ``(n, anchors)`` of anchors labelled by class index, each row's best score
    per class ``(n, classes)`` (``-inf`` for a class without anchors)."""
    best = np.full((len(scores), classes), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, labels, scores.T)
    return best


class RouterHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON part of a router: its classes and decision thresholds."""

    classes: tuple[str, ...]
    embedder: str | None = None
    """Model id of the sentence encoder whose vectors the router also reads (None: n-grams
    only). The service must embed questions with exactly this model."""
    embedding_dim: int = 0
    combine: str = "joint"
    """How the two feature blocks meet: ``"joint"`` (one softmax over both) or ``"mean"`` (one
    softmax head per block, probabilities averaged)."""
    words_weight: float = 0.5
    """With ``combine="mean"``: the n-gram head's weight in the average (the sentence-vector
    head has the rest)."""
    threshold: float
    """Minimum probability of the best class for a confident (L2) answer."""
    agreed_threshold: float | None = None
    """A lower minimum that applies when both heads rank the best class first (``None``: no
    such rule)."""
    min_similarity: float | None = None
    """Minimum cosine between the question's sentence vector and the best class's centroid
    (the normalised mean of its training phrasings' vectors) for an answer (``None``: no such
    gate). Probabilities only rank the classes against each other; a question far from every
    phrasing of its best class is about something else, however clearly it beats the rest."""
    trained_on: int = 0
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    anchor_threshold: float | None = None
    """Minimum cosine between the question's vector and the nearest phrasing of a document
    entry (an anchor) for that entry to be served (``None``: no document rule). Document
    entries are decided by this rule alone, never by the probabilities: their phrasings are
    written from the section (by the offline provider, templates of its heading), so how
    surely the regression separates them says nothing of real questions."""
    anchor_margin: float = 0.0
    """Minimum gap between the nearest document entry's similarity and the next entry's."""


class Prediction(msgspec.Struct, frozen=True, kw_only=True):
    """The router's verdict on one question, with the evidence for it."""

    intent: str | None
    """The matched intent, or ``None`` when the router abstains."""
    confidence: float
    candidates: tuple[tuple[str, float], ...]
    """The best three classes and their probabilities."""
    reason: str
    far: bool = False
    """True when the similarity gate turned the best class down: the question is about
    something the router was not trained on, so no class is a candidate (not even for L3)."""


class RouterModel:
    """A trained linear router (see the module docstring)."""

    def __init__(
        self,
        header: RouterHeader,
        buckets: npt.NDArray[np.int64],
        idf: Floats,
        weights: Floats,
        bias: Floats,
        embedding_weights: Floats | None = None,
        embedding_bias: Floats | None = None,
        centroids: Floats | None = None,
        anchors: Floats | None = None,
        anchor_labels: npt.NDArray[np.int64] | None = None,
    ) -> None:
        classes = len(header.classes)
        if weights.shape != (len(buckets), classes) or idf.shape != buckets.shape:
            raise CorruptSnapshotError("router arrays do not match their header")
        if header.embedder is not None and (
            embedding_weights is None or embedding_weights.shape != (header.embedding_dim, classes)
        ):
            raise CorruptSnapshotError("router embedding weights do not match their header")
        if not 0.0 <= header.words_weight <= 1.0:
            raise CorruptSnapshotError(f"router words_weight {header.words_weight} not in [0, 1]")
        if header.combine not in ("joint", "mean"):
            raise CorruptSnapshotError(f"unknown router combination {header.combine!r}")
        if (
            header.combine == "mean"
            and embedding_weights is not None
            and (embedding_bias is None or embedding_bias.shape != (classes,))
        ):
            raise CorruptSnapshotError("router embedding bias does not match its header")
        if centroids is not None and centroids.shape != (classes, header.embedding_dim):
            raise CorruptSnapshotError("router centroids do not match their header")
        if header.min_similarity is not None and centroids is None:
            raise CorruptSnapshotError("router has a similarity gate but no centroids")
        if (anchors is None) != (anchor_labels is None) or (
            anchors is not None
            and anchor_labels is not None
            and (
                anchors.shape != (len(anchor_labels), header.embedding_dim)
                or (
                    len(anchor_labels)
                    and not 0 <= int(anchor_labels.min()) <= int(anchor_labels.max()) < classes
                )
            )
        ):
            raise CorruptSnapshotError("router anchors do not match their header")
        if header.anchor_threshold is not None and anchors is None:
            raise CorruptSnapshotError("router has a document rule but no anchors")
        self.header = header
        self.buckets = buckets
        self.idf = idf
        self.weights = weights
        self.bias = bias
        self.embedding_weights = embedding_weights
        self.embedding_bias = embedding_bias
        self.centroids = centroids
        self.anchors = anchors
        self.anchor_labels = anchor_labels
        self.documents: frozenset[str] = (
            frozenset(header.classes[int(i)] for i in set(anchor_labels.tolist()))
            if anchor_labels is not None
            else frozenset()
        )
        """Classes decided by the document rule (see :attr:`RouterHeader.anchor_threshold`)."""

    @property
    def document_share(self) -> float:
        """The share of in-scope classes the document rule decides."""
        inside = [c for c in self.header.classes if c != OUT_OF_SCOPE]
        return len(self.documents) / len(inside) if inside else 0.0

    def estimated_wrong_rate(self, oos_share: float | None = None) -> float | None:
        """The wrong-answer rate this router's tuning expects at ``oos_share`` of out-of-scope
        traffic (default: the share it was tuned to), or ``None`` when it cannot say (a router
        tuned without held-out verdicts, or by an older compiler)."""
        metrics = self.header.metrics
        share = metrics.get("policy_oos_share") if oos_share is None else oos_share
        if share is None:
            return None
        return estimated_wrong_rate(metrics, share, document_share=self.document_share)

    @property
    def estimate_basis(self) -> str:
        """What the risk estimate stands on, in words (shown beside it)."""
        parts = []
        if self.document_share < 1.0:
            parts.append("curated entries: held-out phrasings and left-out entries")
        if self.documents and self.header.metrics.get("document_model_phrasings"):
            parts.append(
                "document entries: the model's questions held out and left-out entries "
                "(a model's phrasings, not users')"
            )
        elif self.documents:
            parts.append(
                "document entries: section texts asked as questions, alone and after their "
                "headings, and left-out headings (no user phrasings: stand-ins that bracket "
                "real questions)"
            )
        return "; ".join(parts)

    def nearest_documents(self, embedding: Floats) -> tuple[tuple[str, float], ...]:
        """Document classes by their nearest anchor's cosine to ``embedding``, best first (at
        most three; empty without anchors)."""
        if self.anchors is None or self.anchor_labels is None or not len(self.anchor_labels):
            return ()
        scores = embedding.astype(np.float32)[None, :] @ self.anchors.T
        best = best_per_class(scores, self.anchor_labels, len(self.header.classes))[0]
        order = np.argsort(-best)[:3]
        return tuple(
            (self.header.classes[i], round(float(best[i]), 4))
            for i in order
            if np.isfinite(best[i])
        )

    def similarity(self, best: str, embedding: Floats | None) -> float | None:
        """Cosine of a question's sentence vector to class ``best``'s centroid (``None``
        without centroids or a vector)."""
        if self.centroids is None or embedding is None:
            return None
        row = self.header.classes.index(best)
        return float(self.centroids[row] @ embedding.astype(np.float32))

    def vectorize(self, question: str) -> tuple[npt.NDArray[np.int64], Floats]:
        """Compact feature indices and IDF-weighted, L2-normalised values of a question."""
        features = hashed_features(question)
        keys = np.fromiter(features.keys(), dtype=np.int64, count=len(features))
        values = np.fromiter(features.values(), dtype=np.float32, count=len(features))
        positions = np.searchsorted(self.buckets, keys)
        positions = np.clip(positions, 0, max(len(self.buckets) - 1, 0))
        known = self.buckets[positions] == keys if len(self.buckets) else np.zeros(0, bool)
        index = positions[known]
        weighted = values[known] * self.idf[index]
        norm = float(np.linalg.norm(weighted))
        return index, (weighted / norm if norm else weighted).astype(np.float32)

    @property
    def lowest_threshold(self) -> float:
        """The lowest confidence at which this router ever answers (any class, any rule)."""
        header = self.header
        if header.agreed_threshold is None:
            return header.threshold
        return min(header.threshold, header.agreed_threshold)

    @property
    def needs_embedding(self) -> bool:
        """Whether :meth:`predict` needs the question's sentence vector."""
        return self.header.embedder is not None

    def probabilities(self, question: str, embedding: Floats | None = None) -> Floats:
        """The router's probability for each class (see the module docstring)."""
        return self.head_probabilities(question, embedding)[0]

    def head_probabilities(
        self, question: str, embedding: Floats | None = None
    ) -> tuple[Floats, Floats | None, Floats | None]:
        """Combined probabilities, then the n-gram and sentence-vector heads' own (``None``
        where the router has no such separate head)."""
        index, values = self.vectorize(question)
        logits = self.bias + values @ self.weights[index]
        if self.embedding_weights is None:
            alone = _softmax(logits)
            return alone, alone, None
        if embedding is None or embedding.shape != (self.header.embedding_dim,):
            raise CorruptSnapshotError(
                f"this router needs a {self.header.embedding_dim}-dim vector from "
                f"{self.header.embedder}",
                hint="embed the question with the router's encoder",
            )
        vector_logits = embedding.astype(np.float32) @ self.embedding_weights
        if self.header.combine == "joint":
            return _softmax(logits + vector_logits), None, None
        assert self.embedding_bias is not None  # checked in __init__
        words = _softmax(logits)
        meaning = _softmax(self.embedding_bias + vector_logits)
        weight = self.header.words_weight
        mean: Floats = (weight * words + (1.0 - weight) * meaning).astype(np.float32)
        return mean, words, meaning

    def predict(self, question: str, embedding: Floats | None = None) -> Prediction:
        """Classify, then abstain unless the best in-scope class clears its threshold.

        A curated class is served by the probabilities' rule; a document class only by the
        document rule (nearest anchor within :attr:`RouterHeader.anchor_threshold`, ahead of
        the next class by :attr:`RouterHeader.anchor_margin`), tried when the first does not
        serve a curated class."""
        found = self._predict(question, embedding)
        if found.intent is not None or not self.documents or embedding is None:
            return found
        return self._document_rule(embedding, found)

    def _document_rule(self, embedding: Floats, found: Prediction) -> Prediction:
        nearest = self.nearest_documents(embedding)
        gate = self.header.anchor_threshold
        if not nearest or gate is None:
            return found
        best, similarity = nearest[0]
        runner = nearest[1][1] if len(nearest) > 1 else 0.0
        margin = self.header.anchor_margin
        if similarity >= gate and similarity - runner >= margin:
            return Prediction(
                intent=best,
                confidence=similarity,
                candidates=nearest,
                reason=f"nearest to a phrasing of {best}: similarity {similarity:.2f} "
                f"(min {gate:.2f}), ahead of the next by {similarity - runner:.2f} "
                f"(min {margin:.2f})",
            )
        if found.intent is None and found.candidates and found.candidates[0][0] in self.documents:
            why = (
                f"similarity {similarity:.2f} below {gate:.2f}"
                if similarity < gate
                else f"too close to {nearest[1][0]} (gap {similarity - runner:.2f} below "
                f"{margin:.2f})"
            )
            return msgspec.structs.replace(found, reason=f"nearest document entry {best}: {why}")
        return found

    def _predict(self, question: str, embedding: Floats | None) -> Prediction:
        probs, words, meaning = self.head_probabilities(question, embedding)
        order = np.argsort(-probs)[:3]
        candidates = tuple((self.header.classes[i], round(float(probs[i]), 4)) for i in order)
        best, confidence = candidates[0]
        threshold = self.header.threshold
        agreed = self.header.agreed_threshold
        if agreed is not None and words is not None and meaning is not None:
            top = order[0]
            if int(np.argmax(words)) == top == int(np.argmax(meaning)):
                threshold = min(threshold, agreed)
        if best == OUT_OF_SCOPE or best in self.documents:
            return Prediction(
                intent=None,
                confidence=confidence,
                candidates=candidates,
                reason="closest to the known out-of-scope questions"
                if best == OUT_OF_SCOPE
                else f"{best} is a document entry (decided by its phrasings' similarity)",
            )
        if confidence < threshold:
            return Prediction(
                intent=None,
                confidence=confidence,
                candidates=candidates,
                reason=f"confidence {confidence:.2f} below threshold {threshold:.2f}"
                + self._heads_note(words, meaning),
            )
        gate = self.header.min_similarity
        similarity = self.similarity(best, embedding) if gate is not None else None
        if gate is not None and (similarity is None or similarity < gate):
            shown = "unknown" if similarity is None else f"{similarity:.2f}"
            return Prediction(
                intent=None,
                confidence=confidence,
                candidates=candidates,
                reason=f"far from every phrasing of {best}: similarity {shown} below {gate:.2f}",
                far=True,
            )
        return Prediction(
            intent=best,
            confidence=confidence,
            candidates=candidates,
            reason=f"matched {best} at {confidence:.2f} (threshold {threshold:.2f})"
            + ("" if similarity is None else f", similarity {similarity:.2f} (min {gate:.2f})")
            + self._heads_note(words, meaning),
        )

    def _heads_note(self, words: Floats | None, meaning: Floats | None) -> str:
        """What each head said, when the router has two (part of a prediction's reason)."""
        if words is None or meaning is None:
            return ""
        w, m = int(np.argmax(words)), int(np.argmax(meaning))
        classes = self.header.classes
        return (
            f"; wording says {classes[w]} ({float(words[w]):.2f}),"
            f" meaning says {classes[m]} ({float(meaning[m]):.2f})"
        )

    def to_bytes(self) -> bytes:
        """The router as one ``.npz`` file (the header as JSON bytes inside it)."""
        out = io.BytesIO()
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "header": np.frombuffer(msgspec.json.encode(self.header), dtype=np.uint8),
            "buckets": self.buckets,
            "idf": self.idf,
            "weights": self.weights,
            "bias": self.bias,
        }
        if self.embedding_weights is not None:
            arrays["embedding_weights"] = self.embedding_weights
        if self.embedding_bias is not None:
            arrays["embedding_bias"] = self.embedding_bias
        if self.centroids is not None:
            arrays["centroids"] = self.centroids
        if self.anchors is not None and self.anchor_labels is not None:
            arrays["anchors"] = self.anchors
            arrays["anchor_labels"] = self.anchor_labels
        np.savez_compressed(out, allow_pickle=False, **arrays)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RouterModel:
        """Load a router written by :meth:`to_bytes`; never unpickles."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                header = msgspec.json.decode(arrays["header"].tobytes(), type=RouterHeader)
                return cls(
                    header,
                    arrays["buckets"].astype(np.int64),
                    arrays["idf"].astype(np.float32),
                    arrays["weights"].astype(np.float32),
                    arrays["bias"].astype(np.float32),
                    _optional(arrays, "embedding_weights"),
                    _optional(arrays, "embedding_bias"),
                    _optional(arrays, "centroids"),
                    _optional(arrays, "anchors"),
                    arrays["anchor_labels"].astype(np.int64) if "anchor_labels" in arrays else None,
                )
        except (
            ValueError,
            KeyError,
            OSError,
            EOFError,
            NotImplementedError,
            zipfile.BadZipFile,
            zlib.error,
            msgspec.DecodeError,
        ) as exc:
            raise CorruptSnapshotError(f"router blob cannot be read: {exc}") from exc


def _softmax(logits: Floats) -> Floats:
    shifted = np.exp(logits - logits.max())
    result: Floats = (shifted / shifted.sum()).astype(np.float32)
    return result


def _optional(arrays: np.lib.npyio.NpzFile, name: str) -> Floats | None:
    return arrays[name].astype(np.float32) if name in arrays else None
