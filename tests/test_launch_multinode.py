"""The launch helpers, and a two-"node" run that must equal a one-node run of the same world size.

The two nodes are two torchrun agents on this machine (one worker each) meeting at a c10d
rendezvous on 127.0.0.1, started through `launch/multinode.sh`; the one-node run goes through
`launch/standalone.sh`. Same seed, same world size, same per-rank data shards: the final
weights must agree. The shell-level tests use a stand-in `torchrun`/`srun`/`scontrol` that
print what they were given, since SLURM cannot run here; the real torchrun runs in the slow
tests.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = ("standalone.sh", "multinode.sh", "slurm.sbatch")
# Every shell script of the repository is linted, the helpers above and the rest.
LINTED = [LAUNCH / name for name in (*SCRIPTS, "main.sh", "setup.sh", "test.sh")] + sorted(
    (ROOT / "benchmarks").glob("*.sh"))
TORCHRUN = Path(sys.executable).parent / "torchrun"


def rendezvous_port() -> int:
    """A free port below the kernel's ephemeral range, for a c10d rendezvous endpoint.

    The port is released here and bound by torchrun seconds later. A port from the ephemeral
    range (what `bind(("", 0))` returns) can be handed to another process in that window:
    the other launches of the same test pick their workers' MASTER_PORT that way, and gloo's
    listeners and every outgoing connection draw from that range too. The kernel never hands
    out a port below the range, so only an explicit bind could take it.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default lower bound
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randrange(max(1024, low - 8000), low) if low > 2048 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port found below {low}")


def write_spec(path: Path, data_dir: Path, runs_dir: Path, **train: object) -> Path:
    """A small, fast, deterministic spec: era_s9 (the smallest model), 320 images, no aug noise."""
    spec = {
        "data": {"dir": str(data_dir), "loader": "memory", "num_workers": 0, "max_samples": 320},
        "model": {"name": "era_s9"},
        "augment": {"kind": "basic", "translate": 2},  # memory backend: seeded per (seed, epoch, rank)
        "train": {"epochs": 2, "global_batch_size": 32, "seed": 3, "log_every": 4,
                  "deterministic": True, **train},
        "eval": {"batch_size": 100, "max_samples": 10},
        "logging": {"runs_dir": str(runs_dir), "run_name": "unset", "progress": False,
                    "tensorboard": False},
    }
    path.write_text(json.dumps(spec))
    return path


def launch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC", "MASTER_"))}
    # PYTHONFAULTHANDLER: a worker killed by SIGABRT/SIGSEGV prints every thread's Python stack.
    env.update({"TORCHRUN": str(TORCHRUN), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1",
                **extra})
    return env


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


# ------------------------------------------------------------------ the scripts themselves


@pytest.mark.parametrize("script", LINTED, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """Stand-ins that print their arguments and the environment the helpers must set."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text(
        "#!/usr/bin/env bash\n"
        'echo "ARGS $*"\n'
        'echo "SHARE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-unset}"\n'
        'echo "GLOO=${GLOO_SOCKET_IFNAME:-unset} NCCL=${NCCL_SOCKET_IFNAME:-unset}"\n')
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'nodeA\\nnodeB\\n'\n")
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        'echo "SRUN $*"\n'
        'echo "RDZV=$RDZV_ENDPOINT ID=$RDZV_ID NNODES=$NNODES NPROC=$NPROC"\n'
        # Run the launched command as the single task, like srun on one node.
        'while [[ "$1" == --* ]]; do shift; done\n'
        'exec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_standalone_prints_and_passes_arguments(fake_bin):
    env = launch_env(TORCHRUN=str(fake_bin / "torchrun"), NPROC="3")
    out = _run([str(LAUNCH / "standalone.sh"), "--max-restarts=2", "--", "specs/era_s9.json",
                "--set", "train.epochs=1"], env)
    assert out.returncode == 0, out.stderr
    expected = ("--standalone --nproc-per-node=3 --local-ranks-filter=0 --max-restarts=2 "
                "-m ddpcifar.train specs/era_s9.json --set train.epochs=1")
    assert f"ARGS {expected}" in out.stdout
    assert "SHARE=1" in out.stdout
    assert out.stderr.startswith("+ ") and expected in out.stderr  # the command is printed
    # Without `--` every argument is for the trainer; RANKS_FILTER= shows all ranks.
    env["RANKS_FILTER"] = ""
    out = _run([str(LAUNCH / "standalone.sh"), "specs/era_s9.json", "--resume"], env)
    assert "ARGS --standalone --nproc-per-node=3 -m ddpcifar.train specs/era_s9.json --resume" in out.stdout


def test_multinode_static_and_rendezvous_modes(fake_bin):
    script = str(LAUNCH / "multinode.sh")
    base = launch_env(TORCHRUN=str(fake_bin / "torchrun"), NPROC="4", NNODES="2")
    static = _run([script, "s.json"], {**base, "NODE_RANK": "1", "MASTER_ADDR": "10.1.1.1",
                                        "IFNAME": "ib0"})
    assert static.returncode == 0, static.stderr
    assert ("ARGS --nnodes=2 --nproc-per-node=4 --node-rank=1 --master-addr=10.1.1.1 "
            "--master-port=29500 --local-ranks-filter=0 -m ddpcifar.train s.json") in static.stdout
    assert "GLOO=ib0 NCCL=ib0" in static.stdout and "SHARE=1" in static.stdout
    rdzv = _run([script, "--max-restarts=3", "--", "s.json"],
                {**base, "NNODES": "1:4", "RDZV_ENDPOINT": "10.1.1.1:29400", "RDZV_ID": "job7"})
    assert ("ARGS --nnodes=1:4 --nproc-per-node=4 --rdzv-backend=c10d "
            "--rdzv-endpoint=10.1.1.1:29400 --rdzv-id=job7 --local-ranks-filter=0 "
            "--max-restarts=3 -m ddpcifar.train s.json") in rdzv.stdout
    missing = _run([script, "s.json"], base)  # neither rendezvous nor master given
    assert missing.returncode == 2
    assert "set RDZV_ENDPOINT (c10d rendezvous) or NODE_RANK and MASTER_ADDR" in missing.stderr
    no_nodes = _run([script, "s.json"], launch_env(TORCHRUN=str(fake_bin / "torchrun")))
    assert no_nodes.returncode == 2 and no_nodes.stderr.startswith("usage: NNODES=N")


def test_slurm_template_wires_srun_to_torchrun(fake_bin):
    env = launch_env(TORCHRUN=str(fake_bin / "torchrun"), PATH=f"{fake_bin}:{os.environ['PATH']}",
                     SLURM_JOB_NODELIST="node[A-B]", SLURM_NNODES="2", SLURM_JOB_ID="1234",
                     SLURM_GPUS_ON_NODE="4", SLURM_SUBMIT_DIR=str(ROOT), IFNAME="eth1")
    out = _run(["bash", str(LAUNCH / "slurm.sbatch"), "specs/era_s9.json", "--set",
                "train.epochs=3"], env)
    assert out.returncode == 0, out.stderr
    assert "SRUN --ntasks-per-node=1 --kill-on-bad-exit=1 launch/multinode.sh --max-restarts=3" in out.stdout
    # MASTER_ADDR is the first host scontrol lists; the port is derived from the job id.
    assert "RDZV=nodeA:29634 ID=1234 NNODES=2 NPROC=4" in out.stdout
    assert ("ARGS --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint=nodeA:29634 "
            "--rdzv-id=1234 --local-ranks-filter=0 --max-restarts=3 -m ddpcifar.train "
            "specs/era_s9.json --set train.epochs=3") in out.stdout
    assert "GLOO=eth1 NCCL=eth1" in out.stdout and "SHARE=1" in out.stdout


# ------------------------------------------------------------------ real torchrun


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_nodes_equal_one_node(tmp_path, prepared_data):
    runs = tmp_path / "runs"
    spec = write_spec(tmp_path / "spec.json", prepared_data.data_dir, runs)

    port = rendezvous_port()
    # RANKS_FILTER= : every local rank's output reaches the console, so a failure shows the
    # rank that failed, not only local rank 0 and torchrun's exit-code summary.
    env = launch_env(NNODES="2", NPROC="1", RDZV_ENDPOINT=f"127.0.0.1:{port}",
                     RDZV_ID=f"test{port}", RANKS_FILTER="")
    cmd = [str(LAUNCH / "multinode.sh"), str(spec), "--set", "logging.run_name=two"]
    # All three agents at once (the one-node run too): start-up dominates on a small machine.
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    procs.append(subprocess.Popen(
        [str(LAUNCH / "standalone.sh"), str(spec), "--set", "logging.run_name=one"],
        env=launch_env(NPROC="2", RANKS_FILTER=""), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
    outputs: list[str] = []
    timed_out = False
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300)[0])
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        for p in procs:
            p.kill()
        outputs += [p.communicate()[0] for p in procs[len(outputs):]]
    if timed_out or any(p.returncode != 0 for p in procs):
        names = ("first multinode.sh", "second multinode.sh", "standalone.sh, two ranks")
        report = [f"===== {name}: exit status {p.returncode}\n{text}"
                  for name, p, text in zip(names, procs, outputs)]
        pytest.fail(("timed out" if timed_out else "a launch failed")
                    + "; the whole output of every launch follows\n" + "\n".join(report))
    assert all("--nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d" in t for t in outputs[:2])
    assert "--standalone --nproc-per-node=2" in outputs[2]

    status = json.loads((runs / "two" / "status.json").read_text())
    assert status["state"] == "finished" and status["world_size"] == 2
    a, b = final_state(runs / "one"), final_state(runs / "two")
    assert a.keys() == b.keys()
    for key in a:
        # Same ranks, same shards, same reduction order: expected bitwise equal; the tolerance
        # only allows for a different gloo algorithm choice across the two topologies.
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    evals = [[json.loads(line)["values"]["top1"] for line in (runs / r / "metrics.jsonl").open()
              if '"eval"' in line] for r in ("one", "two")]
    assert evals[0] == pytest.approx(evals[1], abs=1e-6)
