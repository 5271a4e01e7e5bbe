"""Fixtures of the end-to-end tests: the example knowledge compiled once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.compile import CompileParams, CompileResult, compile_knowledge
from tests.conftest import EXAMPLES


class Compiled:
    """A store with the examples compiled and published, and the two compile results."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'knowledge.db'}"
        self.build = root / "build"
        self.first: CompileResult = self.compile()
        self.second: CompileResult = self.compile()

    def compile(self, knowledge: Path = EXAMPLES, **changes: object) -> CompileResult:
        params = CompileParams(
            knowledge=str(knowledge), store=self.url, build_dir=str(self.build), publish=True
        )
        return compile_knowledge(params.model_copy(update=changes))


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Compiled:
    return Compiled(tmp_path_factory.mktemp("compiled"))
