"""The python code blocks of docs/training-components.md run (so the documentation cannot rot)."""

import pytest

from tests.utils.docs import DOCS, python_blocks, run_block

DOC = DOCS / "training-components.md"


def test_the_doc_has_examples() -> None:
    assert len(python_blocks(DOC)) >= 6


@pytest.mark.parametrize("index", range(len(python_blocks(DOC))))
def test_code_block_runs(index: int) -> None:
    run_block(DOC, index)
