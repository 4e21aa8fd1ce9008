"""Every recorded benchmark output says how it was made (issue #21): the files under ``bench/results/``
start with the command that produced them and the commit of the code they ran or were recorded with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
HEAD = 3000  # characters: "starts with" — the header, not a mention deep in a log
# a command line: a bench script, a semid subcommand, a module, torchrun
COMMAND = re.compile(
    r"\b(?:python3?\s+(?:bench/\S+\.py|-m\s)|bash\s+bench/|semid\s+[a-z][a-z-]+\b|torchrun\s)"
)
# a short or full git hash, named as one: "# commit: 1a2b3c4", "Commit 1a2b3c4", "code at 1a2b3c4", "Worktree /w: 1a2b3c4"
COMMIT = re.compile(
    r"(?i:commit|\bat|worktree)\b[^\n]{0,60}?\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b"
)


def recorded() -> list[Path]:
    return sorted(p for p in RESULTS.iterdir() if p.is_file() and p.name != "README.md")


@pytest.mark.parametrize("path", recorded(), ids=lambda p: p.name)
def test_each_recorded_output_starts_with_its_command_and_a_commit(path: Path) -> None:
    head = path.read_text(encoding="utf-8")[:HEAD]
    assert COMMAND.search(head), f"{path.name}: no command in its first {HEAD} characters"
    assert COMMIT.search(head), f"{path.name}: no commit in its first {HEAD} characters"


def test_every_recorded_output_is_listed_in_the_results_index() -> None:
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in recorded() if f"`{p.name}`" not in index]
    assert not missing
