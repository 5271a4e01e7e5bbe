"""The snapshot manifest and the snapshot itself, with the checksum that binds them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import msgspec

from schemas.errors import CorruptSnapshotError
from schemas.keys import exact_key, intent_key, topic_key, validate_tenant, validate_version
from schemas.records import ExactAnswer, FallbackAnswer, IntentTemplate, Source, TopicBlock

__all__ = [
    "FAILING_KEPT",
    "SCHEMA_VERSION",
    "DuplicateGroup",
    "DuplicateMember",
    "DuplicateVerdict",
    "FailingCase",
    "GateResult",
    "Manifest",
    "MemberStatus",
    "Snapshot",
    "SourceFingerprint",
    "snapshot_checksum",
    "snapshot_counts",
]

SCHEMA_VERSION = 1


class SourceFingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """One knowledge document as the compile saw it."""

    doc_id: str
    path: str
    sha256: str
    bytes: int = 0


class FailingCase(msgspec.Struct, frozen=True, kw_only=True):
    """A labelled question a gate's ladder run got wrong."""

    question: str
    expected: str
    """What would have been right: ``entry`` ids, ``doc/section`` targets, or "the fallback"."""
    got: str
    """The layer and entry served."""
    why: str = ""
    """The answer's own explanation (the router's reason, a threshold missed)."""


class GateResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one quality gate."""

    name: str
    passed: bool
    detail: str = ""
    value: float | None = None
    target: float | None = None
    failing: tuple[FailingCase, ...] = ()
    """The regression gate's failing cases (at most :data:`FAILING_KEPT`; ``detail`` names the
    first few)."""


FAILING_KEPT: Final = 200
"""Failing cases a gate result keeps (the manifest stays small; the count is in ``detail``)."""


DuplicateVerdict = Literal["same", "conflict"]
"""``same``: every member answers like the canonical entry; ``conflict``: one answers otherwise."""
MemberStatus = Literal["canonical", "merged", "held", "rejected"]
"""``canonical`` serves the group; ``merged`` phrasings train the canonical's class and its
section is cited as an alternate; ``held`` waits in the review queue (not served, not merged);
``rejected`` was turned down in review."""


class DuplicateMember(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a duplicate group."""

    entry_id: str
    question: str
    section: Source
    """The section the entry was drawn from (a curated entry's FAQ line)."""
    question_similarity: float = 1.0
    """Cosine of its question's sentence vector with the canonical question's."""
    answer_similarity: float = 1.0
    """Cosine of its answer's sentence vector with the canonical answer's."""
    status: MemberStatus = "merged"


class DuplicateGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Entries that ask the same question, routed to one canonical entry."""

    id: str
    """Content hash of the members' sections and canonical questions."""
    verdict: DuplicateVerdict
    canonical: str
    """Entry id that serves the group."""
    members: tuple[DuplicateMember, ...]
    """The canonical member first, then the others in canonical order."""
    reason: str = ""
    """Why the entries were grouped."""

    @property
    def entry_ids(self) -> tuple[str, ...]:
        return tuple(m.entry_id for m in self.members)

    @property
    def alternates(self) -> tuple[Source, ...]:
        """The merged members' sections: the canonical answer's alternate sources."""
        return tuple(m.section for m in self.members if m.status == "merged")


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a version is: where it came from, what it holds, which gates it passed."""

    version: str
    created_at: str
    parent: str | None = None
    schema_version: int = SCHEMA_VERSION
    default_language: str = "en"
    sources: tuple[SourceFingerprint, ...] = ()
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    gates: tuple[GateResult, ...] = ()
    blobs: dict[str, str] = msgspec.field(default_factory=dict)
    """Name of each binary artifact (router weights, ...) to its SHA-256."""
    checksum: str = ""
    """SHA-256 over every artifact record and blob; see :func:`snapshot_checksum`."""
    compiler: str = ""
    """What compiled it (package and stage versions): a different compiler recompiles."""
    duplicates: tuple[DuplicateGroup, ...] = ()
    """Groups of entries that ask the same question (see :mod:`tasks.duplicates`)."""


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A whole version: manifest plus every artifact. Immutable once published."""

    manifest: Manifest
    exact: tuple[ExactAnswer, ...] = ()
    intents: tuple[IntentTemplate, ...] = ()
    topics: tuple[TopicBlock, ...] = ()
    fallbacks: tuple[FallbackAnswer, ...] = ()
    blobs: dict[str, bytes] = msgspec.field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest.version

    def sealed(self) -> Snapshot:
        """This snapshot with counts, blob hashes and checksum filled into its manifest."""
        manifest = msgspec.structs.replace(
            self.manifest,
            counts=snapshot_counts(self),
            blobs={name: hashlib.sha256(data).hexdigest() for name, data in self.blobs.items()},
            checksum=snapshot_checksum(
                self.exact, self.intents, self.topics, self.fallbacks, self.blobs
            ),
        )
        return msgspec.structs.replace(self, manifest=manifest)

    def verify(self) -> None:
        """Raise :class:`CorruptSnapshotError` unless every field agrees with the manifest."""
        validate_version(self.manifest.version)
        counts = snapshot_counts(self)
        if counts != self.manifest.counts:
            raise CorruptSnapshotError(
                f"snapshot {self.version}: counts {counts} do not match manifest "
                f"{self.manifest.counts}",
                hint="the snapshot is incomplete or was edited; compile it again",
            )
        checksum = snapshot_checksum(
            self.exact, self.intents, self.topics, self.fallbacks, self.blobs
        )
        if checksum != self.manifest.checksum:
            raise CorruptSnapshotError(
                f"snapshot {self.version}: checksum {checksum[:12]} does not match manifest "
                f"{self.manifest.checksum[:12]}",
                hint="the snapshot was modified after it was sealed; compile it again",
            )
        tenants = {e.tenant for e in self.exact} | {i.tenant for i in self.intents}
        for tenant in tenants | {t.tenant for t in self.topics}:
            if tenant is not None:
                validate_tenant(tenant)
        _check_unique(self)

    def keyed(self) -> Iterable[tuple[str, str, bytes]]:
        """Every record as ``(kind, key, json)``: the rows a key-value store holds."""
        version = self.version
        seen: set[str] = set()
        for exact in self.exact:
            payload = msgspec.json.encode(exact)
            for phrasing in exact.phrasings:
                key = exact_key(version, phrasing, language=exact.language, tenant=exact.tenant)
                if key not in seen:
                    seen.add(key)
                    yield "exact", key, payload
        for intent in self.intents:
            key = intent_key(version, intent.intent, language=intent.language, tenant=intent.tenant)
            yield "intent", key, msgspec.json.encode(intent)
        for topic in self.topics:
            key = topic_key(version, topic.topic, language=topic.language, tenant=topic.tenant)
            yield "topic", key, msgspec.json.encode(topic)


def snapshot_counts(snapshot: Snapshot) -> dict[str, int]:
    """Number of records of each family."""
    return {
        "exact": len(snapshot.exact),
        "intents": len(snapshot.intents),
        "topics": len(snapshot.topics),
        "fallbacks": len(snapshot.fallbacks),
        "blobs": len(snapshot.blobs),
    }


def snapshot_checksum(
    exact: Iterable[ExactAnswer],
    intents: Iterable[IntentTemplate],
    topics: Iterable[TopicBlock],
    fallbacks: Iterable[FallbackAnswer],
    blobs: Mapping[str, bytes],
) -> str:
    """SHA-256 over the records' canonical JSON (order-independent) and the blobs."""
    digest = hashlib.sha256()
    for family, records in (
        ("exact", exact),
        ("intents", intents),
        ("topics", topics),
        ("fallbacks", fallbacks),
    ):
        lines = sorted(_record_json(record) for record in records)
        digest.update(family.encode())
        for line in lines:
            digest.update(hashlib.sha256(line).digest())
    for name in sorted(blobs):
        digest.update(b"blob:" + name.encode() + hashlib.sha256(blobs[name]).digest())
    return digest.hexdigest()


_ADDED_LATER: Final = (("alternates", ()), ("approved_via", ""), ("passages", ()))
"""Record fields added after records were first sealed, with their defaults."""


def _record_json(record: msgspec.Struct) -> bytes:
    """A record's canonical JSON for the checksum. Fields added after records were first sealed
    are left out while at their default, so snapshots sealed before they existed verify."""
    later = [name for name, default in _ADDED_LATER if getattr(record, name, None) == default]
    if later:
        fields = msgspec.to_builtins(record)
        for name in later:
            del fields[name]
        return msgspec.json.encode(fields, order="sorted")
    return msgspec.json.encode(record, order="sorted")


def _check_unique(snapshot: Snapshot) -> None:
    families: tuple[tuple[str, list[tuple[str, str, str | None]]], ...] = (
        ("exact", [(e.id, e.language, e.tenant) for e in snapshot.exact]),
        ("intent", [(i.intent, i.language, i.tenant) for i in snapshot.intents]),
        ("topic", [(t.topic, t.language, t.tenant) for t in snapshot.topics]),
        ("fallback", [(f.domain, f.language, None) for f in snapshot.fallbacks]),
    )
    for family, ids in families:
        if len(set(ids)) != len(ids):
            duplicated = sorted({i[0] for i in ids if ids.count(i) > 1})
            raise CorruptSnapshotError(
                f"snapshot {snapshot.version}: duplicate {family} ids {duplicated[:5]}",
                hint="each id must be unique per language and tenant",
            )
