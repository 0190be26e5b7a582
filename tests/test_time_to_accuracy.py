"""benchmarks/time_to_accuracy.py: which runs its merge averages together, and the ratios it reports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "time_to_accuracy.py"
_spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
tta = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tta)


def record(part: str, seed: int, top1_tta: float, time_s: float, *, spec: str = "specs/airbench94.json",
           epochs: float = 9.9, nproc: int = 1, images_per_s: float = 250.0) -> dict:
    r = {"part": part, "seed": seed, "nproc": nproc, "epochs": epochs, "top1": top1_tta - 0.01,
         "top1_tta": top1_tta, "time_s": time_s, "images_per_s": images_per_s}
    return r | ({"spec": spec} if part == "ddpcifar" else {"recipe": Path(spec).stem})


def test_merge_keeps_recipes_lengths_and_ranks_apart():
    table = tta.summarise([
        record("ddpcifar", 0, 0.90, 2000.0),
        record("ddpcifar", 1, 0.92, 2200.0),
        record("ddpcifar", 0, 0.88, 1900.0, spec="specs/airbench94_muon.json", epochs=8),
        record("ddpcifar", 0, 0.70, 300.0, epochs=1.5),
        record("ddpcifar", 0, 0.91, 2100.0, nproc=2, images_per_s=225.0),
        record("plain", 0, 0.905, 1050.0 * 2),
    ])
    assert set(table) == {"ddpcifar-airbench94-e9.9-n1", "ddpcifar-airbench94_muon-e8-n1",
                          "ddpcifar-airbench94-e1.5-n1", "ddpcifar-airbench94-e9.9-n2",
                          "plain-airbench94-e9.9-n1"}
    n1 = table["ddpcifar-airbench94-e9.9-n1"]
    assert n1["runs"] == 2 and n1["seeds"] == [0, 1]
    assert n1["top1_tta_mean"] == pytest.approx(0.91)
    assert n1["top1_tta_std"] == pytest.approx(0.01 * 2 ** 0.5)  # sample std of 0.90 and 0.92
    assert n1["time_ratio_vs_plain"] == pytest.approx(2100.0 / 2100.0)
    assert n1["top1_tta_minus_plain"] == pytest.approx(0.005)
    assert table["ddpcifar-airbench94-e9.9-n2"]["throughput_vs_n1"] == pytest.approx(225.0 / 250.0)
    # No plain run of the same recipe and length: no ratio rather than a wrong one.
    assert "time_ratio_vs_plain" not in table["ddpcifar-airbench94_muon-e8-n1"]
    assert "time_ratio_vs_plain" not in table["ddpcifar-airbench94-e1.5-n1"]


def test_the_muon_recipe_is_compared_with_the_plain_muon_script():
    table = tta.summarise([
        record("ddpcifar", 0, 0.90, 2000.0),
        record("plain", 0, 0.905, 1800.0),
        record("ddpcifar", 0, 0.91, 1500.0, spec="specs/airbench94_muon.json", epochs=8),
        record("plain", 0, 0.92, 1000.0, spec="specs/airbench94_muon.json", epochs=8),
    ])
    assert table["ddpcifar-airbench94_muon-e8-n1"]["time_ratio_vs_plain"] == pytest.approx(1.5)
    assert table["ddpcifar-airbench94_muon-e8-n1"]["top1_tta_minus_plain"] == pytest.approx(-0.01)
    assert table["ddpcifar-airbench94-e9.9-n1"]["time_ratio_vs_plain"] == pytest.approx(2000 / 1800)


def test_only_runs_of_one_invocation_are_paired():
    table = tta.paired([
        record("ddpcifar", 0, 0.90, 2200.0) | {"invocation": "a"},   # seed 0: separate invocations
        record("plain", 0, 0.91, 1600.0) | {"invocation": "b"},
        record("ddpcifar", 1, 0.90, 1900.0) | {"invocation": "c"},   # seed 1 side by side
        record("plain", 1, 0.92, 2000.0) | {"invocation": "c"},
        record("ddpcifar", 1, 0.90, 2100.0, nproc=2) | {"invocation": "c"},  # 2 ranks: not paired
        record("ddpcifar", 2, 0.91, 1800.0) | {"invocation": "d"},   # seed 2 side by side
        record("plain", 2, 0.90, 1500.0) | {"invocation": "d"},
        record("ddpcifar", 0, 0.70, 300.0, epochs=1.5) | {"invocation": "e"},  # another length
        record("plain", 0, 0.71, 200.0, epochs=1.5) | {"invocation": "e"},
        record("ddpcifar", 3, 0.90, 1000.0),  # no invocation id: never paired
        record("plain", 3, 0.90, 1000.0),
    ])
    assert set(table) == {"airbench94-e9.9", "airbench94-e1.5"}
    row = table["airbench94-e9.9"]
    assert [(p["invocation"], p["seed"]) for p in row["pairs"]] == [("c", 1), ("d", 2)]
    assert row["time_ratio_mean"] == pytest.approx((1900 / 2000 + 1800 / 1500) / 2)
    assert row["top1_tta_minus_plain_mean"] == pytest.approx((-0.02 + 0.01) / 2)
    assert table["airbench94-e1.5"]["time_ratio_mean"] == pytest.approx(1.5)


def test_merge_pairs_older_records_by_their_file(tmp_path: Path):
    """Records written without an invocation id came one file per invocation."""
    both, ddp, plain = tmp_path / "both.json", tmp_path / "ddp.json", tmp_path / "plain.json"
    both.write_text(json.dumps({"records": [record("ddpcifar", 1, 0.90, 1900.0),
                                            record("plain", 1, 0.91, 2000.0)]}))
    ddp.write_text(json.dumps({"records": [record("ddpcifar", 0, 0.90, 2400.0)]}))
    plain.write_text(json.dumps({"records": [record("plain", 0, 0.91, 1600.0)]}))
    out = tmp_path / "merged.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "merge", str(both), str(ddp), str(plain),
                           "--out", str(out)], capture_output=True, text=True, check=True)
    merged = json.loads(out.read_text())
    pairs = merged["paired"]["airbench94-e9.9"]["pairs"]
    assert [(p["invocation"], p["seed"]) for p in pairs] == [("both.json", 1)]
    assert merged["paired"]["airbench94-e9.9"]["time_ratio_mean"] == pytest.approx(0.95)
    # The means still average all runs: (1900 + 2400) / (2000 + 1600).
    assert merged["summary"]["ddpcifar-airbench94-e9.9-n1"]["time_ratio_vs_plain"] == \
        pytest.approx(4300 / 3600)
    assert all("invocation" in r for r in merged["records"])
    assert "time ratio 0.950 over 1 pair(s)" in done.stdout


def test_merge_command_writes_the_table(tmp_path: Path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"records": [record("ddpcifar", 0, 0.90, 1100.0)]}))
    b.write_text(json.dumps({"records": [record("plain", 0, 0.91, 1000.0)]}))
    out = tmp_path / "merged.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "merge", str(a), str(b), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    merged = json.loads(out.read_text())
    assert len(merged["records"]) == 2
    assert merged["summary"]["ddpcifar-airbench94-e9.9-n1"]["time_ratio_vs_plain"] == pytest.approx(1.1)
    assert "1.100" in done.stdout


def test_records_of_two_cpus_are_never_averaged_or_compared_together():
    amd, intel = {"cpu": "AMD EPYC", "cores": 2}, {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2}
    records = [record("ddpcifar", 0, 0.90, 1000.0) | {"machine": amd, "invocation": "a"},
               record("plain", 0, 0.90, 950.0) | {"machine": amd, "invocation": "a"},
               record("ddpcifar", 1, 0.91, 1900.0) | {"machine": intel, "invocation": "b"},
               record("plain", 1, 0.91, 2000.0) | {"machine": intel, "invocation": "b"}]
    table = tta.summarise(records)
    assert set(table) == {f"{part}-airbench94-e9.9-n1@{cpu}" for part in ("ddpcifar", "plain")
                          for cpu in ("AMD EPYC", "Intel(R) Xeon(R) Processor")}
    assert table["ddpcifar-airbench94-e9.9-n1@AMD EPYC"]["time_ratio_vs_plain"] == \
        pytest.approx(1000 / 950)
    pairs = tta.paired(records)
    assert set(pairs) == {"airbench94-e9.9@AMD EPYC", "airbench94-e9.9@Intel(R) Xeon(R) Processor"}


def test_a_faster_spec_pairs_with_the_published_recipe_and_options_stay_apart():
    records = [
        record("ddpcifar", 0, 0.905, 700.0, spec="specs/airbench94_muon_fast.json", epochs=7)
        | {"invocation": "a", "variant": "model.compile=true", "compile": "default"},
        record("plain", 0, 0.906, 1000.0) | {"invocation": "a"},
        record("ddpcifar", 1, 0.90, 1000.0) | {"invocation": "b", "variant": "model.compile=true",
                                                "compile": "default"},
        record("plain", 1, 0.90, 800.0) | {"invocation": "b", "variant": "--compile default",
                                          "compile": "default"},
        record("plain", 2, 0.90, 1100.0) | {"invocation": "c"},  # eager: not the compiled's match
    ]
    pairs = tta.paired(records)
    fast = pairs["airbench94_muon_fast-e7[model.compile=true] vs plain airbench94-e9.9"]
    assert fast["time_ratio_mean"] == pytest.approx(0.7)
    assert fast["top1_tta_minus_plain_mean"] == pytest.approx(-0.001)
    both = pairs["airbench94-e9.9[model.compile=true] vs plain airbench94-e9.9[--compile default]"]
    assert both["time_ratio_mean"] == pytest.approx(1.25)
    table = tta.summarise(records)
    # Compiled against compiled: the ratio of the means uses the compiled plain group only.
    assert table["ddpcifar-airbench94-e9.9[model.compile=true]-n1"]["time_ratio_vs_plain"] == \
        pytest.approx(1000 / 800)


def test_each_record_carries_its_machine_commit_command_and_load(tmp_path: Path):
    done = tta._timed([sys.executable, "-c", "pass"])
    assert done["machine"]["cpu"] and done["machine"]["cores"] >= 1 and done["machine"]["torch"]
    assert done["command"].endswith("-c pass") and len(done["load_before"]) == 3
    assert done["commit"] is None or len(done["commit"].split("+")[0]) == 12
    # Older files had one machine per file: merge stamps it on their records, marked as such,
    # and a record's own machine wins.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"machine": {"cpu": "AMD EPYC"},
                               "records": [record("ddpcifar", 0, 0.9, 1000.0),
                                           record("plain", 0, 0.9, 900.0)
                                           | {"machine": {"cpu": "Intel(R) Xeon(R) Processor"}}]}))
    out = tmp_path / "merged.json"
    subprocess.run([sys.executable, str(SCRIPT), "merge", str(old), "--out", str(out)],
                   capture_output=True, text=True, check=True)
    merged = json.loads(out.read_text())
    first, second = merged["records"]
    assert first["machine"] == {"cpu": "AMD EPYC"} and first["machine_from_file"] == "old.json"
    assert second["machine"]["cpu"].startswith("Intel") and "machine_from_file" not in second
    assert [m["cpu"] for m in merged["machines"]] == ["AMD EPYC", "Intel(R) Xeon(R) Processor"]


@pytest.mark.parametrize("recipe, extra", [("airbench94", []),
                                           ("airbench94_muon", ["--tta-threshold", "1.0"])])
def test_plain_script_trains_each_recipe(prepared_data, tmp_path: Path, recipe: str, extra: list):
    out = tmp_path / "plain.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "airbench_plain.py"), "--recipe", recipe,
                    "--data", str(prepared_data.data_dir), "--epochs", "2", "--batch-size", "250",
                    "--out", str(out), *extra], check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["recipe"] == recipe and result["steps"] == 8  # 1,000 images / 250, 2 epochs
    assert 0.0 <= result["top1"] <= 1.0 and 0.0 <= result["top1_tta"] <= 1.0
    assert result["tta_images"] == 200 and result["compile_s"] is None  # threshold 1.0: all
    assert result["time_to_accuracy_s"] == pytest.approx(
        result["whitening_s"] + result["train_s"] + result["final_eval_s"])
