"""``python -m oml.demo`` reads its config from the package, so it runs from an installed oml too."""

import subprocess
import sys
from pathlib import Path

from oml.demo import CONFIG, compose_config
from tests.utils.docs import REPO


def test_the_packaged_demo_config_is_the_mock_recipe() -> None:
    assert CONFIG.parent == Path(__import__("oml.configs").configs.__file__).parent
    assert CONFIG.read_bytes() == (REPO / "pipelines" / "mock" / "train.yaml").read_bytes()


def test_the_demo_config_composes_from_an_installed_copy(tmp_path: Path) -> None:
    # a non-editable install of the package into a folder, imported from elsewhere (no checkout around)
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        env={"PIP_FIND_LINKS": " ", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    code = (
        "import oml, oml.demo; from pathlib import Path; "
        f"assert Path(oml.__file__).is_relative_to(Path(r'{target}')), oml.__file__; "
        "cfg = oml.demo.compose_config(oml.demo.CONFIG, ['max_epochs=1']); "
        "print(cfg['max_epochs'], cfg['optimizer']['name'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            "PYTHONPATH": str(target),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "NO_ALBUMENTATIONS_UPDATE": "1",
        },
    )
    assert out.stdout.split() == ["1", "adam"]
    assert compose_config(CONFIG, [])["optimizer"]["name"] == "adam"
