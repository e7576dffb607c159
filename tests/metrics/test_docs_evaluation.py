"""The python blocks of docs/evaluation.md run, top to bottom in one namespace (so the documentation cannot rot)."""

from tests.utils.docs import DOCS, python_blocks, run_all_blocks

DOC = DOCS / "evaluation.md"


def test_doc_blocks_run() -> None:
    assert len(python_blocks(DOC)) >= 6
    namespace = run_all_blocks(DOC)
    assert set(namespace["clustering"]["OVERALL"]) >= {"nmi", "ami"}
