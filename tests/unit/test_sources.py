"""Knowledge sources: the sources file, and a named source fetched as a local folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import fsspec  # type: ignore[import-untyped]
import pytest

from schemas.errors import InvalidInputError
from schemas.sources import load_sources
from tasks.sources import knowledge_folder


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A git repository with the knowledge under docs/, one commit on main."""
    repo = tmp_path / "origin"
    _write(repo / "docs" / "refunds.md", "# Refunds\n\nRefunds take five days.\n")
    _write(repo / "README.md", "not knowledge\n")
    _git("init", "--quiet", "--initial-branch", "main", cwd=repo)
    _git("-c", "user.email=t@example.com", "-c", "user.name=t", "add", ".", cwd=repo)
    _git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "one", cwd=repo)
    return repo


def test_a_sources_file_declares_folders_repositories_and_urls(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "conf" / "sources.toml",
        """
[knowledge.examples]
path = "../examples"

[knowledge.handbook]
git = "https://git.example.com/handbook.git"
ref = "main"
subdir = "docs"

[knowledge.help-center]
url = "s3://acme-help/center/"
""",
    )
    sources = load_sources(file)
    assert sorted(sources) == ["examples", "handbook", "help-center"]
    assert sources["examples"].path == str(tmp_path / "conf" / ".." / "examples")  # beside it
    assert (sources["handbook"].kind, sources["handbook"].ref) == ("git", "main")
    assert sources["help-center"].url == "s3://acme-help/center/"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('[knowledge.a]\npath = "x"\ngit = "y"\n', "has path and git of path, git, url"),
        ("[knowledge.a]\nsubdir = 'docs'\n", "has none of path, git, url"),
        ('[knowledge.a]\nurl = "s3://b/"\nref = "main"\n', "a ref but no git repository"),
        ('[knowledge.a]\ngit = "y"\nsubdir = "../up"\n', "leaves the checkout"),
        ('[knowledge."a b"]\npath = "x"\n', "is not a name"),
        ('[knowledge.a]\npath = "x"\nbranch = "main"\n', "unknown field"),
        ("[other]\nx = 1\n", "only [knowledge.NAME] tables"),
        ("[knowledge.a\n", "is not TOML"),
    ],
)
def test_a_bad_sources_file_is_refused_naming_the_problem(
    tmp_path: Path, body: str, problem: str
) -> None:
    with pytest.raises(InvalidInputError, match=problem.replace("[", r"\[").replace(".", r"\.")):
        load_sources(_write(tmp_path / "sources.toml", body))


def test_a_folder_is_used_as_given_and_an_unknown_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path / "kb" / "a.md", "# A\n\ntext\n").parent
    assert knowledge_folder(str(folder), tmp_path / "build") == folder
    with pytest.raises(InvalidInputError, match="'handbook' is neither a folder nor a source"):
        knowledge_folder(
            "handbook", tmp_path / "build", _write(tmp_path / "s.toml", "[knowledge.x]\npath='.'\n")
        )
    monkeypatch.delenv("RAGC_SOURCES", raising=False)
    with pytest.raises(InvalidInputError, match="RAGC_SOURCES names no sources file"):
        knowledge_folder("handbook", tmp_path / "build")


def test_a_git_source_is_cloned_then_fetched_again(tmp_path: Path, repository: Path) -> None:
    file = _write(
        tmp_path / "sources.toml",
        f'[knowledge.handbook]\ngit = "{repository}"\nref = "main"\nsubdir = "docs"\n',
    )
    build = tmp_path / "build"
    folder = knowledge_folder("handbook", build, file)
    assert folder == build / "sources" / "handbook" / "checkout" / "docs"
    assert (folder / "refunds.md").read_text().startswith("# Refunds")
    # A new commit upstream (a change, a removal): the next compile sees exactly it.
    _write(repository / "docs" / "shipping.md", "# Shipping\n\nTwo days.\n")
    (repository / "docs" / "refunds.md").unlink()
    _git("-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A", cwd=repository)
    _git(
        "-c",
        "user.email=t@example.com",
        "-c",
        "user.name=t",
        "commit",
        "-qm",
        "two",
        cwd=repository,
    )
    again = knowledge_folder("handbook", build, file)
    assert sorted(p.name for p in again.iterdir()) == ["shipping.md"]


def test_a_url_source_is_copied_and_removed_files_go(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/kb/faq.jsonl", b'{"question": "q?", "answer": "a."}\n')
    fs.pipe("/kb/help/a.md", b"# A\n\ntext\n")
    file = _write(tmp_path / "sources.toml", '[knowledge.help]\nurl = "memory://kb/"\n')
    build = tmp_path / "build"
    folder = knowledge_folder("help", build, file)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "faq.jsonl",
        "help/a.md",
    ]
    fs.rm("/kb/help/a.md")
    again = knowledge_folder("help", build, file)
    assert sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file()) == [
        "faq.jsonl"
    ]
    missing = _write(tmp_path / "m.toml", '[knowledge.gone]\nurl = "memory://nothing-here/"\n')
    with pytest.raises(InvalidInputError, match="is not a folder"):
        knowledge_folder("gone", build, missing)
