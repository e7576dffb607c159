"""One live run per run folder: a lock file with the owner's pid, stale locks detected and taken over.

OML 0.4.4 let two runs share a run folder (e.g. the same ``logs_folder``): both exited 0 and one run's
checkpoints and ``.hydra`` files silently replaced the other's. ``lock_run_folder`` refuses a folder that a
live process holds and names that process.
"""

import contextlib
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

LOCK_NAME = ".oml_run.lock"

# folders this process holds -> how many nested ``lock_run_folder`` blocks hold them
_HELD: Dict[Path, int] = {}


class RunFolderBusyError(RuntimeError):
    """Another live run writes into the run folder."""


def _start_time(pid: int) -> Optional[str]:
    """The start time of a process (Linux ``/proc``; None elsewhere): a reused pid has another one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _is_alive(owner: Dict[str, Any]) -> bool:
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = owner.get("started")
    return started is None or _start_time(pid) in (None, started)


def _read_owner(lock: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as stale


def _try_create(lock: Path, owner: Dict[str, Any]) -> bool:
    """Create ``lock`` with the owner's record in one step (a hard link fails if the name exists)."""
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(owner))
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


@contextlib.contextmanager
def lock_run_folder(folder: Union[str, Path]) -> Iterator[Path]:
    """Hold ``folder/.oml_run.lock`` while the block runs; nested calls of one process share the lock.

    A lock of a process that is no longer running (killed, crashed, another machine's pid reused here) is
    stale: it is taken over with a warning. Child processes of the owner (Lightning's DDP workers re-run the
    command) may use the folder too.

    Raises:
        RunFolderBusyError: a live process holds the folder; the message names it and how to pick another folder.
    """
    folder = Path(folder).resolve()
    if folder in _HELD:
        _HELD[folder] += 1
        try:
            yield folder / LOCK_NAME
        finally:
            _HELD[folder] -= 1
        return

    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid()), "time": time.time()}
    owned = False
    for _ in range(10):
        if _try_create(lock, me):
            owned = True
            break
        owner = _read_owner(lock)
        if owner is None:
            continue  # released meanwhile
        other_host = owner.get("host", me["host"]) != me["host"]
        if owner.get("pid") == os.getppid() and not other_host:
            break  # a worker process of the run that holds the folder
        if other_host or _is_alive(owner):
            where = f" on {owner['host']}" if other_host else ""
            raise RunFolderBusyError(
                f"The run folder {folder} is in use by another run (pid {owner.get('pid')}{where}, lock file "
                f"{lock}); refusing to write into it. Give this run its own folder (e.g. the override "
                f"logs_folder=<new name>), or wait for the other run to end. If no such run is alive, delete {lock}."
            )
        warnings.warn(
            f"Taking over the run folder {folder}: its lock belonged to pid {owner.get('pid')}, which is no longer "
            f"running (a killed or crashed run).",
            stacklevel=3,
        )
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    else:
        raise RunFolderBusyError(f"Could not take the lock {lock}: other processes keep taking it.")

    _HELD[folder] = 1
    try:
        yield lock
    finally:
        _HELD.pop(folder, None)
        if owned and (_read_owner(lock) or {}).get("pid") == os.getpid():
            lock.unlink()


__all__ = ["LOCK_NAME", "RunFolderBusyError", "lock_run_folder"]
