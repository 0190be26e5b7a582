"""Hardened inputs: every bad input is one line on stderr, a non-zero exit, no traceback, and
no damage to an existing run.

Most cases run in-process through `ddpcifar.train.main` / `ddpcifar.evaluate.main` (fast);
the `slow` ones at the end go through real subprocesses, torchrun included, to prove the exit
status and the absence of a traceback on stderr. Each case asserts the stable part of its
exact message. The README quotes the number of tests collected from this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from ddpcifar.engine.checkpoint import load_checkpoint, save_checkpoint
from ddpcifar.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


# ------------------------------------------------------------------ helpers


def base_spec(data_dir: Path, runs_dir: Path) -> dict[str, Any]:
    return {
        "data": {"dir": str(data_dir), "loader": "memory", "num_workers": 0, "max_samples": 320},
        "model": {"name": "era_s9"},
        "augment": {"kind": "none"},
        "train": {"epochs": 1, "global_batch_size": 32, "seed": 1, "log_every": 5},
        "eval": {"batch_size": 100, "max_samples": 5},
        "logging": {"runs_dir": str(runs_dir), "run_name": "good", "progress": False,
                    "tensorboard": False},
    }


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: compared before and after a failed command."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(capsys, rc: int, expected: str, code: int = 2) -> str:
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert expected in err, err
    return err


def train(args: list[str]) -> int:
    from ddpcifar.train import main

    return main([str(a) for a in args])


def evaluate(args: list[str]) -> int:
    from ddpcifar.evaluate import main

    return main([str(a) for a in args])


def write_with_sidecar(path: Path, data: bytes) -> Path:
    """A file with a *valid* sidecar, so that loading gets past the integrity check."""
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path


def torch_bytes(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prepared_data) -> Path:
    """A finished one-epoch run: runs/good with checkpoints, metrics, samples and summary."""
    root = tmp_path_factory.mktemp("bad_inputs")
    spec = write_json(root / "spec.json", base_spec(prepared_data.data_dir, root / "runs"))
    assert train([spec]) == 0
    return root


@pytest.fixture
def run_copy(finished, tmp_path) -> tuple[Path, Path, dict[str, bytes]]:
    """(spec, run_dir, snapshot) of a private copy of the finished run."""
    shutil.copytree(finished / "runs", tmp_path / "runs")
    spec = json.loads((finished / "spec.json").read_text())
    spec["logging"]["runs_dir"] = str(tmp_path / "runs")
    path = write_json(tmp_path / "spec.json", spec)
    run = tmp_path / "runs" / "good"
    return path, run, snapshot(run)


@pytest.fixture
def data_copy(prepared_data, tmp_path) -> Path:
    dest = tmp_path / "data"
    shutil.copytree(prepared_data.data_dir, dest)
    return dest


# ------------------------------------------------------------------ the spec file


def test_spec_file_missing(tmp_path, capsys):
    one_line_error(capsys, train([tmp_path / "nope.json"]),
                   f"error: spec file not found: {tmp_path / 'nope.json'}")


def test_spec_invalid_json(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text('{"model": {"name": "era_s9"},}')
    one_line_error(capsys, train([path]),
                   f"spec {path} is not valid JSON: Expecting property name enclosed in double "
                   "quotes at line 1 column 30")


def test_spec_not_an_object(tmp_path, capsys):
    path = write_json(tmp_path / "s.json", [{"model": "era_s9"}])
    one_line_error(capsys, train([path]), f"spec {path} must be a JSON object, got list")


def test_spec_is_a_directory(tmp_path, capsys):
    one_line_error(capsys, train([tmp_path]), f"cannot read spec {tmp_path}: IsADirectoryError")


def test_spec_not_utf8(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_bytes(b'{"model": "\xff\xfe"}')
    one_line_error(capsys, train([path]), f"cannot read spec {path}: UnicodeDecodeError")


# ------------------------------------------------------------------ spec fields

Mutation = Callable[[dict[str, Any]], None]

FIELD_CASES: list[tuple[str, Mutation, str]] = [
    ("wrong type", lambda s: s["train"].update(epochs="three"),
     'train.epochs="three": Input should be a valid number, unable to parse string as a number'),
    ("wrong type string", lambda s: s["model"].update(name=5),
     "model.name=5: Input should be a valid string"),
    ("unknown section", lambda s: s.update(optimiser={"lr": 0.1}), "optimiser: unknown key"),
    ("unknown key", lambda s: s["train"].update(epoch=3), "train.epoch: unknown key"),
    ("negative lr", lambda s: s.update(optimizer={"lr": -1}),
     "optimizer.lr=-1: Input should be greater than 0"),
    ("zero epochs", lambda s: s["train"].update(epochs=0),
     "train.epochs=0: Input should be greater than 0"),
    ("too many workers", lambda s: s["data"].update(num_workers=1000),
     "data.num_workers=1000: Input should be less than or equal to 256"),
    ("missing section", lambda s: s.pop("model"), "model: required field is missing"),
    ("unknown model", lambda s: s["model"].update(name="resnet1000"),
     "model.name=\"resnet1000\": unknown model 'resnet1000'; allowed: era_s9, net5fc"),
    ("fp16 on CPU", lambda s: s["train"].update(amp="fp16"),
     "train.amp='fp16' needs CUDA; on CPU use 'bf16', 'auto' or 'off'"),
    ("nesterov without momentum", lambda s: s.update(optimizer={"momentum": 0}),
     "nesterov=true needs momentum > 0"),
    ("run name with separator", lambda s: s["logging"].update(run_name="a/b"),
     "logging.run_name=\"a/b\": run name 'a/b' must be 1-128 of letters, digits"),
    ("run name dot-dot", lambda s: s["logging"].update(run_name=".."),
     "logging.run_name=\"..\": run name '..' must be"),
    ("run name escaping", lambda s: s["logging"].update(run_name="../escape"),
     "logging.run_name=\"../escape\": run name '../escape' must be"),
    ("run name absolute", lambda s: s["logging"].update(run_name="/etc"),
     "logging.run_name=\"/etc\": run name '/etc' must be"),
    ("ffcv with albumentations", lambda s: (s["data"].update(loader="ffcv"),
                                            s["augment"].update(kind="albumentations")),
     "augment.kind='albumentations' needs data.loader='memory'"),
    ("future version", lambda s: s.update(version=2), "version=2: Input should be 1"),
    ("empty data dir", lambda s: s["data"].update(dir=""),
     "data.dir=\"\": dir must name the prepared data directory"),
    ("zero checkpoint steps", lambda s: s.update(checkpoint={"every_steps": 0}),
     "checkpoint.every_steps=0: Input should be greater than or equal to 1"),
    ("unknown schedule", lambda s: s.update(schedule={"name": "linear"}),
     "schedule.name=\"linear\": Input should be 'onecycle', 'triangular', 'cosine', 'step' or "
     "'constant'"),
]


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in FIELD_CASES],
                         ids=[c[0] for c in FIELD_CASES])
def test_spec_field_errors(tmp_path, capsys, mutate, expected):
    spec = base_spec(tmp_path / "data", tmp_path / "runs")
    mutate(spec)
    path = write_json(tmp_path / "s.json", spec)
    err = one_line_error(capsys, train([path]), expected)
    assert err.startswith(f"error: invalid spec {path}: ")


# ------------------------------------------------------------------ --set overrides

SET_CASES = [
    ("train.epochs", "bad --set 'train.epochs': expected section.key=VALUE, e.g. train.epochs=2"),
    ("epochs=3", "bad --set 'epochs=3': expected section.key=VALUE"),
    ("model.name.x=1", "bad --set 'model.name.x=1': 'name' is not a section"),
    ("train.seed=-1", "train.seed=-1: Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize("override,expected", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_set_overrides(tmp_path, capsys, override, expected):
    path = write_json(tmp_path / "s.json", base_spec(tmp_path / "data", tmp_path / "runs"))
    one_line_error(capsys, train([path, "--set", override]), expected)


# ------------------------------------------------------------------ the launch environment

WORLD_CASES = [
    ({"WORLD_SIZE": "2"}, ["--set", "train.global_batch_size=33"],
     "train.global_batch_size=33 is not divisible by the world size 2 (allowed: a multiple of 2)"),
    ({"WORLD_SIZE": "2"}, ["--set", "model.name=scratch_cnn"],
     "model 'scratch_cnn' runs on the NumPy engine in one process; launch it without torchrun "
     "(world size is 2)"),
    ({"WORLD_SIZE": "two"}, [], "environment variable WORLD_SIZE='two' is not an integer"),
]


@pytest.mark.parametrize("env,extra,expected", WORLD_CASES, ids=["odd-batch", "scratch", "env"])
def test_launch_environment_errors(tmp_path, capsys, monkeypatch, env, extra, expected):
    """What torchrun's environment decides (world size) is checked before any process group."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", **env}.items():
        monkeypatch.setenv(key, value)
    path = write_json(tmp_path / "s.json", base_spec(tmp_path / "data", tmp_path / "runs"))
    one_line_error(capsys, train([path, *extra]), expected)
    assert not (tmp_path / "runs").exists()


def test_old_torch_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.9.1+cu121")
    path = write_json(tmp_path / "s.json", base_spec(tmp_path / "data", tmp_path / "runs"))
    one_line_error(capsys, train([path]),
                   "error: torch 2.9.1+cu121 is too old: ddpcifar needs torch >= 2.10")


# ------------------------------------------------------------------ data directories


def test_missing_data_directory(tmp_path, capsys):
    path = write_json(tmp_path / "s.json", base_spec(tmp_path / "nodata", tmp_path / "runs"))
    one_line_error(capsys, train([path]),
                   f"error: data directory not found (run data_prep.py first): {tmp_path / 'nodata'}")
    assert not (tmp_path / "runs" / "good").exists()  # nothing half-created


def test_beton_sha256_mismatch(tmp_path, capsys, data_copy):
    beton = data_copy / "train.beton"
    data = bytearray(beton.read_bytes())
    data[-1] ^= 0xFF
    beton.write_bytes(bytes(data))
    path = write_json(tmp_path / "s.json", base_spec(data_copy, tmp_path / "runs"))
    err = one_line_error(capsys, train([path]), "error: sha256 mismatch (got ")
    assert err.rstrip().endswith(f"meta.json says {err.split('says ')[1][:12]}...): {beton}")
    assert not (tmp_path / "runs" / "good").exists()


def test_corrupt_meta_json(tmp_path, capsys, data_copy):
    (data_copy / "meta.json").write_text('{"format": 1,')
    path = write_json(tmp_path / "s.json", base_spec(data_copy, tmp_path / "runs"))
    one_line_error(capsys, train([path]), "error: corrupt meta.json (")


# ------------------------------------------------------------------ existing runs and --resume


def test_existing_run_needs_resume(run_copy, capsys):
    spec, run, before = run_copy
    one_line_error(capsys, train([spec]),
                   f"error: run directory {run} already exists; pass --resume to continue it or "
                   "pick another name with --set logging.run_name=NAME")
    assert snapshot(run) == before


def test_run_directory_in_use_is_refused(tmp_path, capsys, data_copy):
    """A second launch into a directory that a live run holds fails before it writes anything,
    even when the first has not written status.json yet (two launches started together)."""
    from ddpcifar.runs.rundir import claim_run_dir

    path = write_json(tmp_path / "s.json", base_spec(data_copy, tmp_path / "runs"))
    run = tmp_path / "runs" / "good"
    with claim_run_dir(run):
        one_line_error(capsys, train([path]),
                       f"error: run directory {run} is in use by another run (pid {os.getpid()}); "
                       "wait for it to finish or pick another name with --set logging.run_name=NAME")
        assert [p.name for p in run.iterdir()] == [".lock"]
    # Released: the lock and the directories the claim created are gone, and a run can start.
    assert not (tmp_path / "runs").exists()


def test_a_killed_holder_leaves_no_stale_claim(tmp_path):
    from ddpcifar.runs.rundir import claim_run_dir

    run = tmp_path / "runs" / "good"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ddpcifar.runs.rundir import claim_run_dir\n"
         f"with claim_run_dir({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            with claim_run_dir(run):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert (run / ".lock").exists()  # SIGKILL: no clean-up ran, yet the kernel dropped the lock
    with claim_run_dir(run):
        assert (run / ".lock").read_text() == f"{os.getpid()}\n"


def test_finished_run_leaves_no_lock(run_copy):
    _, run, before = run_copy
    assert "summary.json" in before and ".lock" not in before


def test_resume_without_a_run(tmp_path, capsys):
    path = write_json(tmp_path / "s.json", base_spec(tmp_path / "data", tmp_path / "runs"))
    one_line_error(capsys, train([path, "--resume"]),
                   f"error: --resume: no run to resume at {tmp_path / 'runs' / 'good'}")


def test_resume_without_checkpoints(run_copy, capsys):
    spec, run, _ = run_copy
    shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    one_line_error(capsys, train([spec, "--resume"]),
                   f"error: --resume: {run} has no checkpoint to resume from")
    assert snapshot(run) == before


def test_resume_with_another_model(run_copy, capsys):
    spec, run, before = run_copy
    one_line_error(capsys, train([spec, "--resume", "--set", "model.name=airbench"]),
                   "error: cannot resume: checkpoint is model 'era_s9', spec says 'airbench'")
    assert snapshot(run) == before


def _rewrite_last(run: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit last.pt through the real writer (valid sidecar) and drop prev.pt."""
    ckpts = run / "checkpoints"
    state = load_checkpoint(ckpts / "last.pt")
    change(state)
    save_checkpoint(ckpts / "last.pt", state)
    for name in ("prev.pt", "prev.pt.sha256"):
        (ckpts / name).unlink(missing_ok=True)


def test_resume_from_a_checkpoint_whose_world_size_does_not_match_its_state(run_copy, capsys):
    # Another world size resumes (tests/test_resume_world_size.py); a checkpoint that claims 2
    # ranks but holds one rank's RNG state is damaged, and refused.
    spec, run, _ = run_copy
    _rewrite_last(run, lambda s: s.update(world_size=2))
    before = snapshot(run)
    one_line_error(capsys, train([spec, "--resume"]),
                   "error: cannot resume: checkpoint was written with world size 2, this launch "
                   "has 1, but it holds the state of 1 ranks (a damaged checkpoint)")
    assert snapshot(run) == before


def test_resume_with_weights_that_do_not_fit(run_copy, capsys):
    spec, run, _ = run_copy

    def shrink(state: dict[str, Any]) -> None:
        key = next(iter(state["state_dict"]))
        state["state_dict"][key] = state["state_dict"][key][:1].clone()

    _rewrite_last(run, shrink)
    before = snapshot(run)
    one_line_error(capsys, train([spec, "--resume"]),
                   f"error: cannot resume: {run / 'checkpoints' / 'last.pt'} does not fit model "
                   "'era_s9' (mismatched weights)")
    assert snapshot(run) == before


def test_resume_with_another_batch_size(run_copy, capsys):
    spec, run, before = run_copy
    one_line_error(capsys, train([spec, "--resume", "--set", "train.global_batch_size=16"]),
                   "error: cannot resume: checkpoint is at step 10 after 1 epochs, which does not "
                   "fit 20 steps per epoch (train.global_batch_size or data.max_samples changed?)")
    assert snapshot(run) == before


def test_resume_with_foreign_checkpoint(run_copy, capsys):
    spec, run, _ = run_copy
    ckpts = run / "checkpoints"
    write_with_sidecar(ckpts / "last.pt", torch_bytes({"model": torch.zeros(3)}))
    (ckpts / "prev.pt").unlink(missing_ok=True)  # a one-epoch run has none
    before = snapshot(run)
    one_line_error(capsys, train([spec, "--resume"]),
                   f"error: cannot resume from {ckpts}: {ckpts / 'last.pt'} is not a ddpcifar "
                   "checkpoint")
    assert snapshot(run) == before


def test_resume_with_truncated_checkpoints(run_copy, capsys):
    spec, run, _ = run_copy
    ckpts = run / "checkpoints"
    for name in ("last.pt", "prev.pt"):
        if (ckpts / name).exists():
            (ckpts / name).write_bytes((ckpts / name).read_bytes()[:1000])
    before = snapshot(run)
    one_line_error(capsys, train([spec, "--resume"]),
                   f"error: cannot resume from {ckpts}: checkpoint {ckpts / 'last.pt'} is "
                   "corrupt or incomplete: sha256 ")
    assert snapshot(run) == before


# ------------------------------------------------------------------ python -m ddpcifar.evaluate


@pytest.fixture
def ckpt(run_copy, tmp_path) -> tuple[Path, Path, dict[str, bytes]]:
    """(a copy of best.pt to damage, the run dir, its snapshot)."""
    _, run, before = run_copy
    dest = tmp_path / "c.pt"
    for suffix in ("", ".sha256"):
        shutil.copy(run / "checkpoints" / f"best.pt{suffix}", tmp_path / f"c.pt{suffix}")
    return dest, run, before


def test_evaluate_missing_checkpoint(tmp_path, capsys, prepared_data):
    one_line_error(capsys, evaluate([tmp_path / "x.pt", "--data", prepared_data.data_dir]),
                   f"error: checkpoint not found: {tmp_path / 'x.pt'}")


def test_evaluate_truncated_checkpoint(ckpt, capsys, prepared_data):
    path, run, before = ckpt
    path.write_bytes(path.read_bytes()[:4096])
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir]),
                   f"error: checkpoint {path} is corrupt or incomplete: sha256 ")
    assert snapshot(run) == before


def test_evaluate_checkpoint_without_sidecar(ckpt, capsys, prepared_data):
    path, _, _ = ckpt
    path.with_name("c.pt.sha256").unlink()
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir]),
                   f"error: checkpoint {path} has no c.pt.sha256; refusing to load an "
                   "unverifiable checkpoint")


def test_evaluate_foreign_torch_file(tmp_path, capsys, prepared_data):
    path = write_with_sidecar(tmp_path / "foreign.pt", torch_bytes({"weights": torch.ones(2)}))
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir]),
                   f"error: {path} is not a ddpcifar checkpoint")


def test_evaluate_not_a_torch_file(tmp_path, capsys, prepared_data):
    path = write_with_sidecar(tmp_path / "notes.pt", b"these are not weights\n")
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir]),
                   f"error: cannot load checkpoint {path}: ")


def test_evaluate_newer_checkpoint_format(ckpt, capsys, prepared_data):
    path, _, _ = ckpt
    state = load_checkpoint(path)
    state["format"] = 2
    write_with_sidecar(path, torch_bytes(state))
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir]),
                   f"error: checkpoint {path} has format 2; this version reads format 1")


def test_evaluate_checkpoint_of_another_model(ckpt, capsys, prepared_data):
    path, _, _ = ckpt
    state = load_checkpoint(path)
    state["model"] = "airbench"  # era_s9 weights labelled as another model
    save_checkpoint(path, state)
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir]),
                   f"error: checkpoint {path} does not fit model 'airbench' (mismatched weights)")


def test_evaluate_on_data_with_other_classes(ckpt, capsys, data_copy):
    path, run, before = ckpt
    meta = json.loads((data_copy / "meta.json").read_text())
    meta["classes"] = ["plane", *meta["classes"][1:]]
    write_json(data_copy / "meta.json", meta)
    err = one_line_error(capsys, evaluate([path, "--data", data_copy]),
                         f"error: {data_copy} has classes ['plane', 'automobile',")
    assert f"but checkpoint {path} was trained on ['airplane', 'automobile'," in err
    assert snapshot(run) == before


def test_evaluate_on_beton_with_wrong_sha256(ckpt, capsys, data_copy):
    path, _, _ = ckpt
    beton = data_copy / "test.beton"
    data = bytearray(beton.read_bytes())
    data[len(data) // 2] ^= 0x01
    beton.write_bytes(bytes(data))
    err = one_line_error(capsys, evaluate([path, "--data", data_copy]), "error: sha256 mismatch (got ")
    assert err.rstrip().endswith(f"...): {beton}")


def test_evaluate_missing_data(ckpt, capsys, tmp_path):
    path, _, _ = ckpt
    one_line_error(capsys, evaluate([path, "--data", tmp_path / "none"]),
                   f"error: data directory not found (run data_prep.py first): {tmp_path / 'none'}")


def test_evaluate_bad_batch_size(ckpt, capsys, prepared_data):
    path, _, _ = ckpt
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir, "--batch-size", "0"]),
                   "error: --batch-size must be >= 1, got 0")


def test_evaluate_refuses_old_torch(ckpt, capsys, prepared_data, monkeypatch):
    path, _, _ = ckpt
    monkeypatch.setattr(torch, "__version__", "2.4.0")
    one_line_error(capsys, evaluate([path, "--data", prepared_data.data_dir]),
                   "error: torch 2.4.0 is too old: ddpcifar needs torch >= 2.10")


# ------------------------------------------------------------------ real processes


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.slow
def test_subprocess_evaluate_corrupt_checkpoint(ckpt, prepared_data):
    path, run, before = ckpt
    path.write_bytes(b"\x00" * 64)
    out = subprocess.run([sys.executable, "-m", "ddpcifar.evaluate", str(path), "--data",
                          str(prepared_data.data_dir)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: checkpoint {path} is corrupt or incomplete: sha256 ")
    assert out.stderr.count("\n") == 1
    _no_traceback(out.stderr)
    assert snapshot(run) == before


@pytest.mark.slow
def test_subprocess_train_existing_run(run_copy):
    spec, run, before = run_copy
    out = subprocess.run([sys.executable, "-m", "ddpcifar.train", str(spec)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr == (f"error: run directory {run} already exists; pass --resume to continue "
                          "it or pick another name with --set logging.run_name=NAME\n")
    assert snapshot(run) == before


@pytest.mark.slow
def test_subprocess_torchrun_odd_global_batch(tmp_path, prepared_data):
    """Under torchrun each rank fails with the same line; torchrun then reports the exit codes
    (its own ChildFailedError summary), but no rank prints a traceback. (scratch_cnn under
    torchrun fails the same way, at the same place: test_launch_environment_errors.)"""
    expected = ("train.global_batch_size=33 is not divisible by the world size 2 (allowed: a "
                "multiple of 2)")
    path = write_json(tmp_path / "s.json", base_spec(prepared_data.data_dir, tmp_path / "runs"))
    out = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node=2", "-m",
                          "ddpcifar.train", str(path), "--set", "train.global_batch_size=33"],
                         cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    errors = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
    # One line per rank that got to print it: once the first rank exits, torchrun SIGTERMs the
    # other, which may or may not have printed its own (identical) line by then.
    assert 1 <= len(errors) <= 2, out.stderr
    assert all(l.startswith(f"error: invalid spec {path}: ") and expected in l for l in errors)
    assert "exitcode  : 2" in out.stderr  # torchrun saw the one-line failure's exit status
    assert "[rank0]: Traceback" not in out.stderr and "[rank1]: Traceback" not in out.stderr
    assert 'File "' + str(ROOT / "ddpcifar") not in out.stderr
    assert not (tmp_path / "runs").exists()
