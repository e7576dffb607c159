"""Multi-node training: two "nodes" of one process each on 127.0.0.1, two launches of the real ``oml train``."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from oml.samplers.balance import BalanceSampler
from tests.utils.docs import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
def test_two_nodes_rendezvous_and_split_the_data(tmp_path: Path, mock_dataset_root: Path) -> None:
    port = _free_port()
    common = [
        sys.executable, "-m", "oml.cli", "train", str(REPO / "pipelines" / "mock" / "train.yaml"),
        f"dataset_root={mock_dataset_root}", "num_nodes=2", "devices=1", "accelerator=cpu", "max_epochs=1",
        "valid_period=1", "transforms_train.args.im_size=32", "transforms_val.args.im_size=32",
    ]  # fmt: skip
    processes = []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank))
        env.pop("LOCAL_RANK", None)
        log = open(tmp_path / f"node{rank}.log", "w")  # noqa: SIM115 (closed below)
        # on real machines each node has its own disk; here each "node" gets its own run folder
        command = [*common, f"logs_folder=node{rank}"]
        processes.append((subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for process, log in processes:
        try:
            process.wait(timeout=240)
        finally:
            process.kill()
            log.close()
    logs = [(tmp_path / f"node{rank}.log").read_text() for rank in range(2)]
    assert [p.returncode for p, _ in processes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]
    # each rank trains on its share: the mock sampler gives 3 batches an epoch in one process, ceil(3 / 2) here
    # (only the global rank 0 shows a progress bar)
    labels = pd.read_csv(mock_dataset_root / "df.csv").query("split == 'train'")["label"].tolist()
    assert len(BalanceSampler(labels, n_labels=4, n_instances=4)) == 3
    assert re.search(r"Epoch 0: 100%\S* 2/2 ", logs[0]), logs[0][-2000:]
    # the global rank 0 writes the run's checkpoints (the weights are the same on every rank: DDP all-reduces)
    assert (tmp_path / "logs" / "node0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "logs" / "node1" / "checkpoints" / "last.ckpt").exists()
