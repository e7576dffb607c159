"""Issue 17, finding 3: two runs in one run folder. A live run's folder is refused (before Hydra writes into it);
a killed run's lock is stale and taken over."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oml.cli import main
from oml.const import PROJECT_ROOT
from oml.lightning.pipelines.run_folder import LOCK_NAME, RunFolderBusyError, lock_run_folder

HOLD = (
    "import sys, time; from oml.lightning.pipelines.run_folder import lock_run_folder\n"
    "with lock_run_folder(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)"
)


@pytest.fixture()
def live_holder(tmp_path: Path):
    """Another process that holds ``tmp_path/logs/busy`` (a run in progress)."""
    folder = tmp_path / "logs" / "busy"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "locked"
    yield folder, process
    process.kill()
    process.wait()


def test_cli_refuses_the_folder_of_a_live_run(
    live_holder, mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, holder = live_holder
    monkeypatch.chdir(tmp_path)
    train_yaml = PROJECT_ROOT / "pipelines" / "mock" / "train.yaml"
    with pytest.raises(SystemExit, match=rf"in use by another run \(pid {holder.pid}.*refusing.*logs_folder="):
        main(["train", str(train_yaml), f"dataset_root={mock_dataset_root}", "logs_folder=busy"])
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing of the second run, no .hydra


def test_the_pipeline_refuses_the_folder_of_a_live_run(live_holder) -> None:
    folder, holder = live_holder
    with pytest.raises(RunFolderBusyError, match=f"pid {holder.pid}"), lock_run_folder(folder):
        pass


def test_a_stale_lock_is_taken_over_and_released(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "1"}))
    warning = rf"lock belonged to pid {dead.pid}, which is no longer running"
    with pytest.warns(UserWarning, match=warning), lock_run_folder(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with lock_run_folder(tmp_path):  # the same process may nest
            pass
        assert lock.exists()
    assert not lock.exists()


def test_a_reused_pid_does_not_keep_a_lock(tmp_path: Path) -> None:
    # a live pid that started at another time than the lock says: the owner is gone, its pid was reused
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename, "started": "0"}))
        with pytest.warns(UserWarning, match="no longer running"), lock_run_folder(tmp_path):
            pass
    finally:
        other.kill()
        other.wait()


def test_a_lock_of_another_machine_is_respected(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": None, "time": time.time()}))
    with pytest.raises(RunFolderBusyError, match="pid 1 on elsewhere"), lock_run_folder(tmp_path):
        pass
