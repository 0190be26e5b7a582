"""Security: no code runs from a checkpoint or a data pickle, and a run touches only its own files.

- the source audit: every `torch.load` passes weights_only=True; pickles are read only by the
  restricted unpickler in ddpcifar/data/cifar_pickle.py; no `np.load(allow_pickle=True)`;
- a malicious checkpoint (its pickle calls os.system to create a marker file) with a *valid*
  sha256 sidecar reaches torch.load through evaluate and --resume: a clean one-line error, no
  marker;
- a malicious CIFAR-10 batch pickle through data preparation: the same;
- a training run started in an empty directory (HOME and TMPDIR empty too) creates only the
  runs directory there and leaves the data directory byte-for-byte as it was;
- `python -m tui export` reads a run without changing it.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifar_fixtures import make_batches, make_cifar_tarball

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "ddpcifar").rglob("*.py"), *(ROOT / "tui").rglob("*.py"),
                  *ROOT.glob("*.py")])
RESTRICTED_UNPICKLER = ROOT / "ddpcifar" / "data" / "cifar_pickle.py"


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return "<missing>"


def test_source_tree_is_what_the_audit_expects():
    assert len(SOURCES) > 20 and RESTRICTED_UNPICKLER in SOURCES


def test_every_torch_load_is_weights_only():
    found, bad = 0, []
    for path in SOURCES:
        assert "from torch import load" not in path.read_text(), path  # would hide from the audit
        for call in _calls(path):
            if _dotted(call.func) == "torch.load":
                found += 1
                if _keyword(call, "weights_only") is not True:
                    bad.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert found >= 1, "the audit found no torch.load at all: is it still looking?"
    assert bad == [], f"torch.load without weights_only=True: {bad}"


def test_pickles_only_through_the_restricted_unpickler():
    bad = []
    for path in SOURCES:
        text = path.read_text()
        for call in _calls(path):
            name = _dotted(call.func)
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load",
                        "dill.load", "joblib.load", "torch.serialization.load"):
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
            if name.endswith(("np.load", "numpy.load")) and _keyword(call, "allow_pickle") is True:
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno} np.load(allow_pickle=True)")
        if path != RESTRICTED_UNPICKLER and "pickle.Unpickler" in text:
            bad.append(f"{path.relative_to(ROOT)}: its own Unpickler")
    assert bad == [], bad
    # ... and the one that exists admits only numpy's array reconstruction.
    assert "class SafeUnpickler(pickle.Unpickler)" in RESTRICTED_UNPICKLER.read_text()


# ------------------------------------------------------------------ malicious files


class _RunsCode:
    """Pickles to a call of os.system: loading it with a plain unpickler would run the shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    buf = io.BytesIO()
    torch.save({"kind": "ddpcifar-checkpoint", "format": 1, "model": _RunsCode(marker)}, buf)
    data = buf.getvalue()
    path.write_bytes(data)
    # A valid sidecar: the integrity check passes, so torch.load itself is what must refuse.
    path.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path


def test_the_payload_really_runs_code_when_unpickled_naively(tmp_path):
    """Guard against a harmless 'malicious' file: a plain torch.load would create the marker."""
    marker = tmp_path / "marker"
    path = _malicious_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)  # deliberately unsafe, in this test only
    assert marker.exists()


def test_malicious_checkpoint_through_evaluate(tmp_path, capsys, prepared_data):
    from ddpcifar.evaluate import main

    marker = tmp_path / "marker"
    path = _malicious_checkpoint(tmp_path / "evil.pt", marker)
    rc = main([str(path), "--data", str(prepared_data.data_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert err.startswith(f"error: cannot load checkpoint {path}: Weights only load failed")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_malicious_checkpoint_through_resume(tmp_path, capsys, prepared_data):
    from ddpcifar.train import main

    marker = tmp_path / "marker"
    runs = tmp_path / "runs"
    ckpts = runs / "r" / "checkpoints"
    ckpts.mkdir(parents=True)
    (runs / "r" / "status.json").write_text("{}")
    _malicious_checkpoint(ckpts / "last.pt", marker)
    spec = {"data": {"dir": str(prepared_data.data_dir), "num_workers": 0, "max_samples": 64},
            "model": {"name": "era_s9"}, "train": {"epochs": 1, "global_batch_size": 32},
            "logging": {"runs_dir": str(runs), "run_name": "r", "progress": False,
                        "tensorboard": False}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    rc = main([str(tmp_path / "s.json"), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert err.startswith(f"error: cannot resume from {ckpts}: cannot load checkpoint "
                          f"{ckpts / 'last.pt'}: Weights only load failed")
    assert sorted(p.name for p in (runs / "r").iterdir()) == ["checkpoints", "status.json"]


def test_malicious_cifar_pickle_through_data_prep(tmp_path, capsys):
    from ddpcifar.data.prepare import main

    marker = tmp_path / "marker"
    files, _, _ = make_batches(20, 20, 0)
    files["data_batch_1"] = pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=4)
    tarball, _, _ = make_cifar_tarball(tmp_path, files=files)
    rc = main(["--source", str(tarball), "--out", str(tmp_path / "out"), "--allow-unofficial",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    error_lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(error_lines) == 1 and "Traceback" not in err
    assert error_lines[0].startswith("error: refusing to unpickle posix.system (not part of a "
                                     "CIFAR-10 batch): ")
    assert not (tmp_path / "out" / "meta.json").exists()


# ------------------------------------------------------------------ where a run writes


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_training_writes_only_its_run_directory(tmp_path, prepared_data):
    data = tmp_path / "data"
    shutil.copytree(prepared_data.data_dir, data)
    data.chmod(0o555)  # read-only: a write into the data directory would fail the run
    before = _snapshot(data)
    cwd, home, tmp = tmp_path / "cwd", tmp_path / "home", tmp_path / "tmp"
    for d in (cwd, home, tmp):
        d.mkdir()
    spec = {"data": {"dir": str(data), "num_workers": 0, "max_samples": 64},
            "model": {"name": "era_s9"}, "augment": {"kind": "basic"},
            "train": {"epochs": 1, "global_batch_size": 32},
            "eval": {"batch_size": 100, "max_samples": 5},
            "logging": {"runs_dir": "runs", "run_name": "r", "progress": False,
                        "tensorboard": True}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    try:
        out = subprocess.run([sys.executable, "-m", "ddpcifar.train", str(tmp_path / "s.json")],
                             cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        data.chmod(0o755)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [p.name for p in cwd.iterdir()] == ["runs"]
    assert [p.name for p in (cwd / "runs").iterdir()] == ["r"]
    assert (cwd / "runs" / "r" / "summary.json").exists()
    assert _snapshot(data) == before
    assert list(home.rglob("*")) == []
    # torch itself makes its (empty) compile cache directory when `use_deterministic_algorithms`
    # imports torch._inductor; nothing is written into it by an eager run.
    left = [p.relative_to(tmp) for p in tmp.rglob("*")]
    assert all(str(p).startswith("torchinductor_") for p in left), left
    assert not [p for p in tmp.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_tui_export_leaves_the_run_unchanged(tmp_path, prepared_data):
    from ddpcifar.train import main

    spec = {"data": {"dir": str(prepared_data.data_dir), "num_workers": 0, "max_samples": 64},
            "model": {"name": "era_s9"}, "train": {"epochs": 1, "global_batch_size": 32},
            "eval": {"batch_size": 100, "max_samples": 5},
            "logging": {"runs_dir": str(tmp_path / "runs"), "run_name": "r", "progress": False,
                        "tensorboard": False}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    assert main([str(tmp_path / "s.json")]) == 0
    run = tmp_path / "runs" / "r"
    before = _snapshot(run)
    out = subprocess.run([sys.executable, "-m", "tui", "export", str(run), "--out",
                          str(tmp_path / "png")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert any((tmp_path / "png").glob("*.png"))
    assert _snapshot(run) == before
