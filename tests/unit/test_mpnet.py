"""MPNet: the converted model against torch's vectors, the cache, and clear errors.

The conversion (about half a minute) runs once per machine into the user's model cache
(``$RAGC_MODEL_DIR`` or ``~/.cache/ragc/models``), as the application would do it; later
sessions only load it. Tests that break or re-convert a cache do so in a ``tmp_path`` copy
(the big weights file linked, never modified); a test that converts again is marked ``slow``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from providers import _mpnet_cache as cache
from providers._onnx_mpnet import read_safetensors, relative_bucket
from providers.embedders import Embedder, embedder_for
from providers.mpnet import (
    MODEL_ID_PREFIX,
    SAFETENSORS_SHA256,
    TOKENIZER_SHA256,
    MPNetEmbedder,
    parse_model_id,
)
from schemas.errors import PermanentError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((ROOT / "tests" / "fixtures" / "mpnet_reference.json").read_text())
MODEL_ID = f"{MODEL_ID_PREFIX}-fp32-max128"


@pytest.fixture(scope="session")
def converted() -> cache.PreparedMPNet:
    """The converted model in the user's cache (converted here on a machine's first run)."""
    return cache.ensure_converted()[0]


@pytest.fixture(scope="module")
def mpnet(converted: cache.PreparedMPNet) -> MPNetEmbedder:
    """The encoder as the service rebuilds it from a router's model id (never converting)."""
    embedder = embedder_for(MODEL_ID, serving=True)
    assert isinstance(embedder, MPNetEmbedder)
    return embedder


def _linked_copy(prepared: cache.PreparedMPNet, root: Path) -> Path:
    """A cache folder under ``root`` whose big weights file is a link to the real one."""
    folder = root / prepared.folder.name
    folder.mkdir(parents=True)
    for path in prepared.folder.iterdir():
        if path.name in ("model.onnx.data", "model-int8.onnx"):
            (folder / path.name).symlink_to(path)
        elif not path.name.startswith("."):
            (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_the_fixture_is_of_these_weights() -> None:
    assert REFERENCE["safetensors_sha256"] == SAFETENSORS_SHA256
    assert REFERENCE["max_length"] == 128
    assert len(REFERENCE["sentences"]) == len(REFERENCE["vectors"]) >= 4
    assert all(len(vector) == 768 for vector in REFERENCE["vectors"])


def test_vectors_match_torch_sentence_transformers(mpnet: MPNetEmbedder) -> None:
    reference = np.array(REFERENCE["vectors"], dtype=np.float32)
    # One at a time, as the reference was computed (and unpadded: the long one has 182 tokens).
    vectors = np.concatenate([mpnet.embed([text]) for text in REFERENCE["sentences"]])
    assert vectors.shape == (len(reference), 768)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.9999, cosines
    assert float(np.abs(vectors - reference).max()) < 1e-4


def test_the_encoder_describes_itself(mpnet: MPNetEmbedder) -> None:
    assert isinstance(mpnet, Embedder)
    assert mpnet.model_id == "sentence-transformers/all-mpnet-base-v2-fp32-max128"
    assert mpnet.dim == 768
    assert mpnet.embed([]).shape == (0, 768)
    assert parse_model_id(mpnet.model_id) == ("fp32", 128, ())
    assert parse_model_id(f"{MODEL_ID_PREFIX}-int8-max64-layers10-11-12") == (
        "int8",
        64,
        (10, 11, 12),
    )
    assert parse_model_id(f"{MODEL_ID_PREFIX}-fp16-max128") is None
    assert parse_model_id("all-MiniLM-L6-v2-onnx-int8-max128") is None


@pytest.fixture(scope="module")
def mpnet_int8(converted: cache.PreparedMPNet) -> MPNetEmbedder:
    """The statically quantised encoder, rebuilt from its model id as the service does."""
    embedder = embedder_for(f"{MODEL_ID_PREFIX}-int8-max128", serving=True)
    assert isinstance(embedder, MPNetEmbedder)
    return embedder


def test_int8_vectors_stay_near_torch_and_do_not_depend_on_their_batch(
    mpnet_int8: MPNetEmbedder,
) -> None:
    assert mpnet_int8.precision == "int8"
    assert mpnet_int8.model_id == f"{MODEL_ID_PREFIX}-int8-max128"
    reference = np.array(REFERENCE["vectors"], dtype=np.float32)
    alone = np.concatenate([mpnet_int8.embed([text]) for text in REFERENCE["sentences"]])
    cosines = np.sum(alone * reference, axis=1) / np.linalg.norm(reference, axis=1)
    # Measured 0.968-0.983: near the fp32 vectors, never equal to them (another model id).
    assert cosines.min() >= 0.95, cosines
    assert cosines.max() < 0.9999, cosines
    # Static scales: a question's vector is the same alone or batched with longer ones.
    np.testing.assert_allclose(mpnet_int8.embed(REFERENCE["sentences"]), alone, atol=1e-5)


def test_int8_quantises_the_projections_but_not_the_ffn_output(
    converted: cache.PreparedMPNet,
) -> None:
    import onnx  # noqa: PLC0415

    graph = onnx.load(str(converted.int8_path), load_external_data=False).graph
    weights = [n.input[1] for n in graph.node if n.op_type == "MatMul"]
    quantised = [w for w in weights if w.endswith("_DequantizeLinear_Output")]
    assert len(quantised) == 12 * 5  # q, k, v, o and the FFN input, in each of 12 layers
    assert sum(w.endswith("output.dense.weight_t") for w in weights) == 12
    assert converted.manifest["files"]["model-int8.onnx"]["bytes"] == (
        converted.int8_path.stat().st_size
    )


def test_a_vector_does_not_depend_on_its_batch(
    mpnet: MPNetEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = ["reset my password", *REFERENCE["sentences"][:3]]  # padded to the third's length
    together = mpnet.embed(texts)
    np.testing.assert_allclose(mpnet.embed(texts[:1])[0], together[0], rtol=0, atol=1e-5)
    monkeypatch.setattr(mpnet, "batch_size", 2)
    np.testing.assert_allclose(mpnet.embed(texts), together, rtol=0, atol=1e-5)


def test_layers_concatenate_unit_blocks_ending_in_the_sentence_vector(
    mpnet: MPNetEmbedder, converted: cache.PreparedMPNet
) -> None:
    layered = MPNetEmbedder(converted.folder.parent, layers=(6, 12), prepare=False)
    assert layered.model_id == f"{MODEL_ID}-layers6-12"
    assert layered.dim == 2 * 768
    texts = REFERENCE["sentences"][:2]
    blocks = layered.embed(texts).reshape(2, 2, 768) * np.sqrt(2)
    np.testing.assert_allclose(np.linalg.norm(blocks, axis=2), 1.0, atol=1e-5)
    np.testing.assert_allclose(blocks[:, 1], mpnet.embed(texts), atol=1e-5)
    with pytest.raises(PermanentError, match="between 1 and 12"):
        MPNetEmbedder(converted.folder.parent, layers=(13,), prepare=False)


def test_a_second_preparation_reuses_the_cache(converted: cache.PreparedMPNet) -> None:
    stamps = {path.name: path.stat().st_mtime_ns for path in converted.folder.iterdir()}
    again, did_convert = cache.ensure_converted(converted.folder.parent)
    assert not did_convert
    assert again.manifest == converted.manifest
    assert {p.name: p.stat().st_mtime_ns for p in converted.folder.iterdir()} == stamps


_LOAD = """
import json, sys, time
from pathlib import Path
started = time.perf_counter()
from providers.embedders import embedder_for
embedder = embedder_for(sys.argv[1], serving=True)
embedder.embed(["hello"])
heavy = sorted(m for m in ("torch", "transformers", "safetensors", "sentence_transformers")
               if m in sys.modules)
print(json.dumps({"heavy": heavy, "seconds": time.perf_counter() - started}))
"""


def test_a_new_process_loads_the_cached_model_without_torch(
    converted: cache.PreparedMPNet,
) -> None:
    stamp = (converted.folder / "manifest.json").stat().st_mtime_ns
    env = {**os.environ, "RAGC_MODEL_DIR": str(converted.folder.parent)}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, MODEL_ID],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env=env,
    )
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    assert (converted.folder / "manifest.json").stat().st_mtime_ns == stamp


def test_the_service_never_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGC_MODEL_DIR", str(tmp_path))
    with pytest.raises(PermanentError, match="has not been converted") as caught:
        embedder_for(MODEL_ID, serving=True)
    assert "prepare_mpnet" in str(caught.value.hint)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json"])
def test_a_tampered_cached_file_is_a_permanent_error(
    converted: cache.PreparedMPNet, tmp_path: Path, name: str
) -> None:
    folder = _linked_copy(converted, tmp_path)
    target = folder / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(PermanentError, match=r"has sha256 [0-9a-f]{64}, expected") as caught:
        cache.ensure_converted(tmp_path)
    assert str(target) in caught.value.message
    assert str(folder) in str(caught.value.hint)
    assert "force=True" in str(caught.value.hint)


def test_a_truncated_weights_file_is_caught_without_hashing(
    converted: cache.PreparedMPNet, tmp_path: Path
) -> None:
    folder = _linked_copy(converted, tmp_path)
    (folder / "model.onnx.data").unlink()
    (folder / "model.onnx.data").write_bytes(b"\0" * 4096)
    with pytest.raises(PermanentError, match="4096 bytes, not"):
        cache.load_prepared(tmp_path)


def test_an_unreadable_manifest_is_a_permanent_error(
    converted: cache.PreparedMPNet, tmp_path: Path
) -> None:
    folder = _linked_copy(converted, tmp_path)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(PermanentError, match="unreadable"):
        cache.load_prepared(tmp_path)


def _zip_parts(tmp_path: Path, members: dict[str, bytes], parts: int = 3) -> list[Path]:
    """A zip of ``members`` (under the model's folder name) cut into ``parts`` files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", data)
    whole = buffer.getvalue()
    cut = -(-len(whole) // parts)
    paths = []
    for index in range(parts):
        path = tmp_path / f"all-mpnet-base-v2.zip.{index + 1:03d}"
        path.write_bytes(whole[index * cut : (index + 1) * cut])
        paths.append(path)
    return paths


def test_the_parts_read_as_one_seekable_file(tmp_path: Path) -> None:
    whole = np.random.default_rng(7).bytes(10_000)
    paths = []
    for index, (start, end) in enumerate([(0, 3000), (3000, 3001), (3001, 10_000)]):
        paths.append(tmp_path / f"p{index}")
        paths[-1].write_bytes(whole[start:end])
    with cache._Concatenated(paths) as joined:
        assert joined.read() == whole
        joined.seek(2990)
        assert joined.read(20) == whole[2990:3010]
        joined.seek(-5, io.SEEK_END)
        assert joined.read(100) == whole[-5:]
        assert joined.tell() == len(whole)


def test_the_reassembled_files_are_checked_against_their_digests(tmp_path: Path) -> None:
    installed = cache.part_paths()  # located without importing their packages
    assert [path.name[-3:] for path in installed] == ["001", "002", "003", "004", "005"]
    assert all(path.is_file() for path in installed)
    wrong = _zip_parts(tmp_path, {"tokenizer.json": b"{}", "model.safetensors": b"x"})
    with pytest.raises(PermanentError, match=r"tokenizer\.json of all-mpnet") as caught:
        cache._read_parts(wrong)
    assert TOKENIZER_SHA256 in caught.value.message
    assert hashlib.sha256(b"{}").hexdigest() in caught.value.message
    assert caught.value.hint


def test_the_reassembled_safetensors_digest_is_checked(
    converted: cache.PreparedMPNet, tmp_path: Path
) -> None:
    members = {"tokenizer.json": converted.tokenizer_path.read_bytes(), "model.safetensors": b"x"}
    with pytest.raises(PermanentError, match=r"model\.safetensors of all-mpnet") as caught:
        cache._read_parts(_zip_parts(tmp_path, members))
    assert SAFETENSORS_SHA256 in caught.value.message


def test_a_corrupt_part_is_a_permanent_error_naming_the_parts(tmp_path: Path) -> None:
    real = cache.part_paths()
    with cache._Concatenated(real) as joined, zipfile.ZipFile(joined) as archive:
        info = archive.getinfo("all-mpnet-base-v2/tokenizer.json")
    # The tokenizer's compressed bytes start after its local header (30 bytes + name + extra).
    spot = info.header_offset + 30 + len(info.filename) + 64 + info.compress_size // 2
    sizes = [path.stat().st_size for path in real]
    index = next(i for i in range(5) if spot < sum(sizes[: i + 1]))
    copies = []
    for i, path in enumerate(real):
        copy = tmp_path / path.name
        if i == index:
            data = bytearray(path.read_bytes())
            data[spot - sum(sizes[:i])] ^= 0xFF
            copy.write_bytes(bytes(data))
        else:
            copy.symlink_to(path)
        copies.append(copy)
    with pytest.raises(
        PermanentError, match=re.escape("zip.001 .. all-mpnet-base-v2.zip.005")
    ) as caught:
        cache.ensure_converted(tmp_path / "models", parts=lambda: copies)
    assert "corrupt" in str(caught.value.hint)
    assert not (tmp_path / "models" / cache._KEY / "manifest.json").exists()


def test_safetensors_are_read_as_typed_arrays() -> None:
    tensors = {"a": np.arange(6, dtype="<f4").reshape(2, 3), "b": np.array([1, -2], dtype="<i8")}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    body, offset = b"", 0
    for name, array in tensors.items():
        raw = array.tobytes()
        header[name] = {
            "dtype": {"float32": "F32", "int64": "I64"}[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        body, offset = body + raw, offset + len(raw)
    encoded = json.dumps(header).encode()
    read = read_safetensors(struct.pack("<Q", len(encoded)) + encoded + body)
    assert sorted(read) == ["a", "b"]
    for name, array in tensors.items():
        np.testing.assert_array_equal(read[name], array)
    with pytest.raises(PermanentError, match="past the end"):
        read_safetensors(struct.pack("<Q", 999) + b"{}")


def test_relative_buckets_match_mpnet() -> None:
    # MPNetEncoder.relative_position_bucket (transformers 5.24) on these key-minus-query offsets.
    offsets = [-300, -128, -127, -64, -20, -16, -15, -9, -8, -7, -1, 0, 1, 7, 8, 9, 15, 16, 20]
    offsets += [64, 127, 128, 300]
    expected = [15, 15, 15, 14, 10, 10, 9, 8, 8, 7, 1, 0, 17, 23, 24, 24, 25, 26, 26, 30, 31]
    expected += [31, 31]
    assert relative_bucket(np.array(offsets, dtype=np.int64)).tolist() == expected


_PREPARE = """
import json, sys
from pathlib import Path
from providers import _mpnet_cache as cache
prepared, converted = cache.ensure_converted(Path(sys.argv[1]))
print(json.dumps({"converted": converted, "files": prepared.manifest["files"]}))
"""


@pytest.mark.slow
def test_two_processes_preparing_at_once_convert_once(
    converted: cache.PreparedMPNet, tmp_path: Path
) -> None:
    command = [sys.executable, "-c", _PREPARE, str(tmp_path)]
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)
    ]
    reports = [json.loads(process.communicate(timeout=600)[0]) for process in running]
    assert all(process.returncode == 0 for process in running)
    assert sorted(report["converted"] for report in reports) == [False, True]
    # The conversion is deterministic: the same bytes as the session's cache.
    assert reports[0]["files"] == reports[1]["files"] == converted.manifest["files"]
    assert not list((tmp_path / cache._KEY).glob(".*.tmp"))
