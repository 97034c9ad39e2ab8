"""Scale-out on one machine: two real `espzoo finetune` processes on 127.0.0.1 as nodes 0 and 1 of a
2-node run (ESPnet's DDP on CPUs with gloo), then the same under a fake `srun` (Slurm's variables)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from _hubtools import ESPZOO, SPEECH, subset

from espzoo.errors import TrainError
from espzoo.train.options import TrainOptions, check_options, espnet_args, node_workdir

TWO_FILES = ("text", "wav.scp")  # as bench/distributed.py gives its nodes: no utt2spk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tiny_repo_char: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, HF_HUB_OFFLINE="1", ESPZOO_HOME=str(root / "home"))
    return {"model": tiny_repo_char, "root": root, "env": env,
            "train": subset(SPEECH / "train", root / "train", 16, TWO_FILES),
            "dev": subset(SPEECH / "dev", root / "dev", 4, TWO_FILES)}


def start(setup: dict, out: Path, rank: int, port: int, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [ESPZOO, "finetune", str(setup["model"]), "--train", str(setup["train"]), "--valid", str(setup["dev"]),
               "--out", str(out), "--batch-bins", "200000", "--json", *extra]
    if env is None:
        command += ["--num-nodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
                    "--master-port", str(port)]
    return subprocess.Popen(command, env=env or setup["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, dict | None, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, json.loads(stdout) if proc.returncode == 0 else None, stderr


def test_two_nodes_on_loopback_train_resume_and_fail_together(setup: dict, tmp_path: Path) -> None:
    from espzoo.decode.recognizer import DecodeOptions, load_recognizer

    out = tmp_path / "exp"
    port = free_port()
    ranks = [start(setup, out, rank, port, "--max-epoch", "1") for rank in (1, 0)]  # node 1 first: it waits
    (code1, one, err1), (code0, zero, err0) = (finish(p) for p in ranks)
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    assert zero["epochs"] == 1 and zero["averaged"]
    assert one["out"] == zero["out"] and one["averaged"] == ""  # node 1 trained, node 0 wrote OUT
    log = (out / "train.log").read_text()
    assert "[" in log and ":0/2]" in log and "--dist_backend gloo" in log  # rank 0 of a world of 2, on gloo
    espnet_config = yaml.safe_load((out / "espnet" / "config.yaml").read_text())
    assert (espnet_config["dist_world_size"], espnet_config["dist_backend"]) == (2, "gloo")
    scratch = node_workdir(out, TrainOptions(num_nodes=2, node_rank=1))
    assert scratch != out and not scratch.exists()  # node 1's own copy of the inputs is gone
    assert load_recognizer(out, DecodeOptions(beam_size=1)).model.kind == "experiment"  # the averaged model loads

    # --resume, the same way on both nodes (a fresh rendezvous port: the last one may still be in TIME_WAIT)
    port = free_port()
    ranks = [start(setup, out, rank, port, "--max-epoch", "2", "--resume") for rank in (1, 0)]
    (code1, _, err1), (code0, zero, err0) = (finish(p) for p in ranks)
    assert (code0, code1) == (0, 0), (err0[-2000:], err1[-2000:])
    assert zero["epochs"] == 2
    assert (out / "espnet" / "2epoch.pth").is_file()

    # A node killed mid-run: the other one stops within seconds with one sentence, instead of hanging.
    port = free_port()
    ranks = [start(setup, out, rank, port, "--max-epoch", "60", "--resume") for rank in (1, 0)]
    deadline = time.monotonic() + 600
    while "4epoch results" not in (out / "train.log").read_text() and time.monotonic() < deadline:
        assert ranks[1].poll() is None, ranks[1].communicate()[1][-2000:]
        time.sleep(0.5)
    espnet_of_node1 = Path(f"/proc/{ranks[0].pid}/task/{ranks[0].pid}/children").read_text().split()
    assert espnet_of_node1
    killed = time.monotonic()
    for pid in espnet_of_node1:
        os.kill(int(pid), signal.SIGKILL)
    code0, _, err0 = finish(ranks[1], timeout=300)
    survived = time.monotonic() - killed
    code1, _, _ = finish(ranks[0], timeout=300)
    assert code0 != 0 and code1 != 0
    assert err0.startswith("error: Another process of this distributed run stopped after epoch")
    assert len(err0.strip().splitlines()) == 1 and "Traceback" not in err0
    print(f"node 0 stopped {survived:.1f} s after node 1 was killed")
    assert survived < 120  # a hang would run into gloo's 30-minute timeout


def test_slurm_launcher_under_a_fake_srun(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    port = str(free_port())
    procs = []
    for rank in (1, 0):
        env = dict(setup["env"], SLURM_PROCID=str(rank), SLURM_NODEID=str(rank), SLURM_LOCALID="0",
                   SLURM_NTASKS="2", SLURM_STEP_NUM_NODES="2", SLURM_STEP_NODELIST="127.0.0.1", MASTER_PORT=port)
        procs.append(start(setup, out, rank, 0, "--max-epoch", "1", "--dist-launcher", "slurm", env=env))
    (code1, one, err1), (code0, zero, err0) = (finish(p) for p in procs)
    assert (code0, code1) == (0, 0), (err0[-2000:], err1[-2000:])
    assert zero["averaged"] and one["averaged"] == "" and (out / "model.pth").is_file()
    assert yaml.safe_load((out / "espnet" / "config.yaml").read_text())["dist_launcher"] == "slurm"
    assert ":0/2]" in (out / "train.log").read_text()  # ESPnet took rank 0 of 2 from the Slurm variables


def test_distributed_arguments_and_refusals(tmp_path: Path) -> None:
    two = TrainOptions(num_nodes=2, node_rank=1, master_addr="127.0.0.1", master_port=29500)
    args = espnet_args(tmp_path / "c.yaml", train=_Fake(), valid=_Fake(), train_text_shape=tmp_path,  # type: ignore
                       valid_text_shape=tmp_path, output_dir=tmp_path, options=two)
    assert args[args.index("--dist_backend") + 1] == "gloo"  # ESPnet's default, nccl, has no CPU tensors
    assert args[args.index("--dist_rank") + 1] == "1"
    single = espnet_args(tmp_path / "c.yaml", train=_Fake(), valid=_Fake(), train_text_shape=tmp_path,  # type: ignore
                         valid_text_shape=tmp_path, output_dir=tmp_path, options=TrainOptions())
    assert "--dist_backend" not in single
    assert node_workdir(tmp_path, TrainOptions()) == tmp_path.resolve()
    with pytest.raises(TrainError, match="needs --master-addr, --master-port on every node"):
        check_options(TrainOptions(num_nodes=2, node_rank=0))
    with pytest.raises(TrainError, match="node_rank 2 is outside 0..1"):
        check_options(TrainOptions(num_nodes=2, node_rank=2, master_addr="h", master_port=1))


class _Fake:
    wav_scp = text = speech_shape = dir = Path("x")
