"""docs/recipes.md: its python blocks run (top to bottom, one namespace) on generated miniature layouts, its
shell commands are those of the recipe READMEs (which ``test_recipes.py`` runs), its links lead somewhere."""

import re
from pathlib import Path

import pytest

from tests.datasets.converters.layouts import make_cub, make_sop
from tests.recipes.test_recipes import readme_commands
from tests.utils.docs import DOCS, REPO, python_blocks, run_all_blocks

DOC = DOCS / "recipes.md"
TEXT = DOC.read_text()


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    assert len(python_blocks(DOC)) == 2
    make_cub(tmp_path / "data" / "CUB_200_2011")
    make_sop(tmp_path / "data" / "broken_SOP")
    (tmp_path / "data" / "broken_SOP" / "chair_final" / "100001_1.JPG").unlink()
    monkeypatch.chdir(tmp_path)
    run_all_blocks(DOC)
    out = capsys.readouterr().out
    assert "protocol 'unseen_classes'" in out
    assert "data/broken_SOP/Ebay_train.txt, line 3: the image does not exist" in out


def test_shell_commands_are_the_readmes() -> None:
    commands = re.findall(r"```shell\n(.*?)```", TEXT, flags=re.DOTALL)
    lines = [line.split()[1:] for block in commands for line in block.splitlines() if line.startswith("oml ")]
    assert lines and all(line in readme_commands("cub") for line in lines)


def test_links_exist() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", TEXT)
    assert len(links) == 4
    for link in links:
        assert (DOC.parent / link).resolve().is_file(), link
    assert "docs/recipes.md" in (REPO / "README.md").read_text()
