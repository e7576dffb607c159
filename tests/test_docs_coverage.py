"""Every markdown page with python blocks (README.md, docs/*.md) is executed by a test that names it."""

import re

import pytest

from tests.utils.docs import DOCS, REPO, python_blocks

PAGES = [page for page in (REPO / "README.md", *sorted(DOCS.glob("*.md"))) if python_blocks(page)]
TEST_SOURCES = "\n".join(path.read_text() for path in (REPO / "tests").rglob("test_*.py"))


def test_the_pages_have_code() -> None:
    assert {page.name for page in PAGES} >= {"README.md", "evaluation.md", "models.md", "retrieval.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_page_with_code_is_run_by_a_test(page) -> None:
    runners = re.findall(r'DOCS / "([\w.-]+\.md)"|REPO / "([\w.-]+\.md)"', TEST_SOURCES)
    named = {name for pair in runners for name in pair if name}
    assert page.name in named, f"no test runs the python blocks of {page.relative_to(REPO)} (use tests/utils/docs.py)"
