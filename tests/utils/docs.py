"""One home for running the code blocks of the documentation in tests (so the docs cannot rot)."""

import re
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def python_blocks(path: Path) -> List[str]:
    """The ```` ```python ```` blocks of a markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", Path(path).read_text(), flags=re.DOTALL)


def run_block(path: Path, index: int, namespace: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Execute block ``index`` of ``path`` in ``namespace`` (a fresh one by default); tracebacks name the block."""
    namespace = {"__name__": "__doc_example__"} if namespace is None else namespace
    exec(compile(python_blocks(path)[index], f"{Path(path).name}[block {index}]", "exec"), namespace)
    return namespace


def run_all_blocks(path: Path, namespace: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Execute every python block of ``path``, top to bottom, in one namespace."""
    namespace = {"__name__": "__doc_example__"} if namespace is None else namespace
    for index in range(len(python_blocks(path))):
        run_block(path, index, namespace)
    return namespace
