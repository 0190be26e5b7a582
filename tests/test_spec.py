"""The run spec: validation messages, overrides, examples and the exported schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddpcifar.errors import UserError
from ddpcifar.spec import RunSpec, apply_overrides, json_schema, load_spec, main as spec_main

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.json"))
EXAMPLES = [p for p in SPECS if p.name != "schema.json" and not p.name.startswith("sweep")]

MINIMAL = {
    "data": {"dir": "data/cifar10"},
    "model": {"name": "era_s9"},
    "train": {"epochs": 2, "global_batch_size": 512},
    "logging": {"run_name": "demo"},
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return path


def spec_error(tmp_path: Path, data: object, overrides=(), **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_spec(write(tmp_path, data), overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "spec errors are one line"
    return message


def test_minimal_spec_fills_defaults(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.train.epochs == 2
    assert spec.optimizer.name == "sgd" and spec.schedule.name == "onecycle"
    assert spec.run_dir == Path("runs/demo")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_specs_are_valid_for_four_ranks(path):
    # The NumPy engine is single-process by design (and says so for world size > 1).
    spec = load_spec(path, world_size=1 if path.stem.startswith("scratch_cnn") else 4)
    raw = json.loads(path.read_text())
    # Every example names its data dir, runs dir, run name and epochs explicitly.
    assert raw["data"]["dir"] and raw["logging"]["runs_dir"] and raw["logging"]["run_name"]
    assert raw["train"]["epochs"] >= 1
    # Named after their model; a recipe for that model adds a suffix (airbench94_muon).
    assert path.stem.startswith(spec.model.name), "examples are named after their model"
    assert raw["logging"]["run_name"] == path.stem


def test_every_model_variant_has_an_example():
    from ddpcifar.models import MODEL_NAMES

    assert {p.stem for p in EXAMPLES} >= set(MODEL_NAMES) | {"scratch_cnn"}


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["train"].update(bogus=1), "train.bogus: unknown key"),
        (lambda d: d.update(extra={}), "extra: unknown key"),
        (lambda d: d["train"].update(epochs=0), "train.epochs=0: Input should be greater than 0"),
        (lambda d: d["train"].update(epochs="ten"), 'train.epochs="ten": Input should be a valid number'),
        (lambda d: d["optimizer"].update(lr=-1), "optimizer.lr=-1: Input should be greater than 0"),
        (lambda d: d["optimizer"].update(name="lamb"), "optimizer.name=\"lamb\": Input should be 'sgd', 'adamw' or 'muon'"),
        (lambda d: d["model"].update(name="resnet50"), "model.name=\"resnet50\": unknown model 'resnet50'; allowed: era_s9"),
        (lambda d: d["schedule"].update(name="poly"), "schedule.name=\"poly\": Input should be 'onecycle', 'triangular', 'cosine', 'step' or 'constant'"),
        (lambda d: d["optimizer"].update(momentum=0.0, nesterov=True), "nesterov=true needs momentum > 0"),
        (lambda d: d["optimizer"].update(betas=[0.9, 1.5]), "optimizer.betas=[0.9, 1.5]: each beta must be in [0, 1)"),
        (lambda d: d["logging"].update(run_name="../escape"), "run name '../escape' must be 1-128 of letters"),
        (lambda d: d["logging"].update(run_name="a/b"), "run name 'a/b' must be"),
        (lambda d: d["train"].update(label_smoothing=1.0), "train.label_smoothing=1.0: Input should be less than 1"),
        (lambda d: d.pop("model"), "model: required field is missing"),
        (lambda d: d["train"].pop("epochs"), "train.epochs: required field is missing"),
        (lambda d: d["data"].update(loader="ffcv") or d.update(augment={"kind": "albumentations"}),
         "augment.kind='albumentations' needs data.loader='memory'"),
    ],
)
def test_spec_errors_name_field_value_and_allowed(tmp_path, mutate, expected):
    data = json.loads(json.dumps({**MINIMAL, "optimizer": {}, "schedule": {}}))
    mutate(data)
    message = spec_error(tmp_path, data)
    assert message.startswith(f"invalid spec {tmp_path / 'spec.json'}: ")
    assert expected in message


def test_global_batch_must_divide_by_world_size(tmp_path):
    data = {**MINIMAL, "train": {"epochs": 1, "global_batch_size": 510}}
    message = spec_error(tmp_path, data, world_size=4)
    assert "train.global_batch_size=510 is not divisible by the world size 4 (allowed: a multiple of 4)" in message
    assert load_spec(write(tmp_path, data), world_size=2).train.global_batch_size == 510


def test_fp16_needs_cuda(tmp_path):
    data = {**MINIMAL, "train": {"epochs": 1, "amp": "fp16"}}
    assert "train.amp='fp16' needs CUDA" in spec_error(tmp_path, data)
    assert load_spec(write(tmp_path, data), cuda=True).train.amp == "fp16"


def test_scratch_model_refuses_several_ranks(tmp_path):
    data = {**MINIMAL, "model": {"name": "scratch_cnn"}}
    assert "runs on the NumPy engine in one process" in spec_error(tmp_path, data, world_size=2)


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match=r"^spec file not found: .*nope\.json$"):
        load_spec(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"train\": ")
    with pytest.raises(UserError, match=r"is not valid JSON: Expecting value at line 1"):
        load_spec(bad)
    assert "must be a JSON object, got list" in spec_error(tmp_path, [1, 2])


def test_overrides_are_typed_and_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    spec = load_spec(path, ["train.epochs=7", "optimizer.name=adamw", "optimizer.betas=[0.8,0.9]",
                            "logging.run_name=other", "train.grad_clip=1.5"])
    assert (spec.train.epochs, spec.optimizer.name, spec.optimizer.betas) == (7, "adamw", (0.8, 0.9))
    assert spec.logging.run_name == "other" and spec.train.grad_clip == 1.5
    assert "train.epochs=-3: Input should be greater than 0" in spec_error(
        tmp_path, MINIMAL, ["train.epochs=-3"])
    assert "train.epoch: unknown key" in spec_error(tmp_path, MINIMAL, ["train.epoch=3"])
    with pytest.raises(UserError, match=r"bad --set 'epochs': expected section.key=VALUE"):
        load_spec(path, ["epochs"])
    with pytest.raises(UserError, match=r"'epochs' is not a section"):
        load_spec(path, ["train.epochs.x=1"])


def test_apply_overrides_does_not_touch_the_input():
    data = {"train": {"epochs": 1}}
    out = apply_overrides(data, ["train.epochs=5", "model.name=net5fc"])
    assert data == {"train": {"epochs": 1}}
    assert out == {"train": {"epochs": 5}, "model": {"name": "net5fc"}}


def test_resolved_spec_round_trips(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL), ["train.seed=9"])
    again = RunSpec.model_validate(json.loads(json.dumps(spec.resolved())))
    assert again == spec


def test_checked_in_schema_is_current():
    """specs/schema.json is what `python -m ddpcifar.spec schema` exports today."""
    assert json.loads((ROOT / "specs" / "schema.json").read_text()) == json_schema()


def test_schema_command_and_check_command(tmp_path, capsys):
    out = tmp_path / "schema.json"
    assert spec_main(["schema", "--out", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert set(schema["properties"]) >= {"data", "model", "optimizer", "schedule", "augment",
                                         "train", "eval", "checkpoint", "logging"}
    assert spec_main(["check", str(write(tmp_path, MINIMAL)), "--world-size", "3"]) == 2
    assert "not divisible by the world size 3" in capsys.readouterr().err
