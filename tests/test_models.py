"""Model zoo tests: CPU only, small batches; every registered model runs forward and backward."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddpcifar.errors import UserError
import ddpcifar.models.registry as registry
from ddpcifar.models import MODEL_NAMES, build_model, model_names, register
from ddpcifar.models.__main__ import main as models_main
from ddpcifar.models.airbench import AirBench
from ddpcifar.models.inspect import count_parameters, receptive_field

BATCH = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # These are tiny CPU workloads on a small CPU where other processes may run; two intra-op threads competing with
    # other processes were measured 2-20x slower than one (docs/models.md), so use one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (BATCH,), generator=gen)
    return images, labels


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


# --- registry -------------------------------------------------------------------------------


def test_registry_names_are_the_five_models() -> None:
    assert MODEL_NAMES == ("era_s9", "net5fc", "vgg8bn", "resnet9", "airbench")


def test_unknown_name_is_a_user_error_listing_allowed_names() -> None:
    with pytest.raises(UserError) as info:
        build_model("resnet50")
    message = str(info.value)
    assert "resnet50" in message
    for name in MODEL_NAMES:
        assert name in message


@pytest.mark.parametrize("bad", [0, 1, -3, True, 2.5, "10"])
def test_bad_num_classes_is_a_user_error(bad: object) -> None:
    with pytest.raises(UserError, match="num_classes"):
        build_model("era_s9", num_classes=bad)  # type: ignore[arg-type]


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="era_s9"):
        register("era_s9")(nn.Identity)
    assert MODEL_NAMES.count("era_s9") == 1


def test_late_registration_is_buildable_but_not_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    # a private copy of the registry, restored afterwards, so no other test sees "tiny"
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))

    @register("tiny")
    class Tiny(nn.Module):
        outputs_log_probs = False

        def __init__(self, num_classes: int = 10) -> None:
            super().__init__()
            self.linear = nn.Linear(3 * 32 * 32, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1))

    assert model_names() == (*MODEL_NAMES, "tiny")
    assert "tiny" not in MODEL_NAMES
    assert isinstance(build_model("tiny", num_classes=3), Tiny)
    with pytest.raises(UserError, match="tiny"):  # the error lists what is accepted now
        build_model("tinny")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_num_classes_sets_output_width(name: str) -> None:
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_gives_identical_parameters(name: str) -> None:
    torch.manual_seed(1234)
    first = build_model(name).state_dict()
    torch.manual_seed(1234)
    second = build_model(name).state_dict()
    torch.manual_seed(4321)
    other = build_model(name).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # and the seed matters: otherwise the check above would hold for any seed
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


# --- every model: channels_last + bf16 autocast, forward and backward -------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_channels_last_bf16(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).to(memory_format=torch.channels_last).train()
    images, labels = _batch()
    images = images.contiguous(memory_format=torch.channels_last)

    conv_outputs: list[torch.Tensor] = []
    hooks = [conv.register_forward_hook(lambda _m, _i, out: conv_outputs.append(out))
             for conv in _convs(model)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
    for hook in hooks:
        hook.remove()
    # the trainer uses cross-entropy for every model (see vgg8bn's docstring for why)
    loss = F.cross_entropy(out.float(), labels)
    loss.backward()

    assert out.shape == (BATCH, 10)
    assert torch.isfinite(loss)
    # convolutions really ran in bf16 and kept the channels_last layout end to end
    assert conv_outputs and all(t.dtype == torch.bfloat16 for t in conv_outputs)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in conv_outputs)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for param_name, param in trainable:
        assert param.grad is not None, f"{name}.{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{param_name} has a non-finite gradient"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_initial_predictions_are_near_uniform(name: str) -> None:
    # A sensible init starts near the uniform prediction (entropy ln(classes), so loss about
    # ln(classes)); a badly scaled head starts confidently random, far below it.
    torch.manual_seed(0)
    model = build_model(name).train()
    with torch.no_grad():
        log_probs = F.log_softmax(model(torch.randn(8, 3, 32, 32)), dim=1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=1).mean()
    assert math.log(10) - entropy.item() < 0.1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_outputs_log_probs_attribute(name: str) -> None:
    model = build_model(name)
    assert isinstance(type(model).outputs_log_probs, bool)
    assert model.outputs_log_probs is (name == "vgg8bn")


def test_vgg8bn_outputs_log_probabilities() -> None:
    torch.manual_seed(0)
    model = build_model("vgg8bn").eval()
    images, labels = _batch()
    with torch.no_grad():
        out = model(images * 3)  # scaled up so the logits are far from uniform
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(BATCH), atol=1e-5)
    assert (out <= 0).all()
    # log_softmax is idempotent, so cross-entropy on it equals NLL: the trainer may use either
    assert torch.allclose(F.cross_entropy(out, labels), F.nll_loss(out, labels), atol=1e-6)


# --- era_s9 ---------------------------------------------------------------------------------


def test_era_s9_budget_and_receptive_field() -> None:
    model = build_model("era_s9")
    assert count_parameters(model) < 200_000
    assert receptive_field(model) > 44


def test_era_s9_structure() -> None:
    model = build_model("era_s9")
    blocks = [model.c1, model.c2, model.c3, model.c4]
    for block in blocks[:3]:
        last = _convs(block)[-1]
        assert last.stride == (2, 2) and last.kernel_size == (3, 3)
    for block in blocks[1:]:
        assert all(conv.dilation == (1, 1) for conv in _convs(block))
    assert any(conv.dilation[0] > 1 for conv in _convs(model.c1))
    for block in (model.c3, model.c4):
        depthwise = [c for c in _convs(block) if c.groups == c.in_channels > 1]
        assert depthwise
        assert all(c.kernel_size == (3, 3) for c in depthwise)
    # no max-pooling anywhere; downsampling is by strided convolutions only
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.head.modules())
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 11


# --- net5fc ---------------------------------------------------------------------------------


def test_net5fc_structure() -> None:
    model = build_model("net5fc")
    assert [c.out_channels for c in _convs(model)] == [8, 32, 64, 128, 256]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    assert any(isinstance(m, nn.Dropout2d) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [256, 128, 64, 10]


# --- vgg8bn ---------------------------------------------------------------------------------


def test_vgg8bn_structure() -> None:
    model = build_model("vgg8bn")
    layers = list(model.features)
    conv_positions = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert len(conv_positions) == 8 == len(_convs(model))
    for i in conv_positions:
        conv, norm = layers[i], layers[i + 1]
        assert conv.kernel_size == (3, 3)
        assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == conv.out_channels
    assert [layers[i].out_channels for i in conv_positions] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in layers) == 4


from ddpcifar.models.whitening import init_whitening  # noqa: E402

# --- airbench whitening hook ----------------------------------------------------------------


def test_airbench_init_whitening_whitens_patches() -> None:
    gen = torch.Generator().manual_seed(0)
    # correlated channels, so whitening has something to undo
    mix = torch.tensor([[1.0, 0.8, 0.2], [0.0, 0.6, 0.5], [0.0, 0.0, 0.3]])
    images = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 32, 32, generator=gen))
    model = AirBench()
    init_whitening(model, images, eps=1e-8)
    features = F.conv2d(images, model.stem.weight[:12])  # the "+" half, bias is zero
    flat = features.permute(0, 2, 3, 1).reshape(-1, 12)
    second_moment = flat.T @ flat / flat.shape[0]
    assert torch.allclose(second_moment, torch.eye(12), atol=1e-3)
    assert torch.equal(model.stem.weight[12:], -model.stem.weight[:12])
    assert torch.equal(model.stem.bias, torch.zeros(24))


def test_airbench_init_whitening_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        init_whitening(AirBench(), torch.zeros(4, 32, 32), eps=5e-4)


# --- inspect: parameter count and receptive field -------------------------------------------


def test_count_parameters_counts_trainable_only() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(5, 2))  # 3*4*9+4 = 112, 5*2+2 = 12
    assert count_parameters(model) == 124
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == 114


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([nn.Conv2d(3, 3, 3, padding=1)], 3),
        ([nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)], 5),
        ([nn.Conv2d(3, 3, 3, stride=2, padding=1), nn.Conv2d(3, 3, 3, padding=1)], 7),
        ([nn.Conv2d(3, 3, 3, padding=2, dilation=2)], 5),
        ([nn.Conv2d(3, 3, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(3, 3, 3, padding=1)], 8),
        ([nn.AvgPool2d(2), nn.AvgPool2d(2), nn.Conv2d(3, 3, 1)], 4),
        ([nn.Conv2d(3, 3, (5, 5), stride=(2, 2)), nn.Conv2d(3, 3, 3)], 9),
        # after a global pool nothing is spatial: the 3x3 on the 1x1 map adds nothing
        ([nn.Conv2d(3, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 3, 3, padding=1)], 3),
    ],
)
def test_receptive_field_on_hand_computed_chains(layers: list[nn.Module], expected: int) -> None:
    assert receptive_field(nn.Sequential(*layers)) == expected


def test_receptive_field_follows_execution_order_not_registration_order() -> None:
    class Reordered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Conv2d(3, 3, 3, padding=1)  # registered first, runs second
            self.early = nn.Conv2d(3, 3, 3, stride=2, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.late(self.early(x))

    # stride-2 first: 1 + 2 + 2*2 = 7 (registration order would give 1 + 2 + 2 = 5)
    assert receptive_field(Reordered()) == 7


def test_receptive_field_rejects_non_square_kernels() -> None:
    with pytest.raises(ValueError, match="square"):
        receptive_field(nn.Sequential(nn.Conv2d(3, 3, (3, 1))))


def test_receptive_field_leaves_model_state_alone() -> None:
    model = build_model("era_s9").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    receptive_field(model)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks for m in model.modules())


# --- the `python -m ddpcifar.models` command ------------------------------------------------


def test_cli_prints_computed_facts(capsys: pytest.CaptureFixture[str]) -> None:
    assert models_main(["era_s9", "vgg8bn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # header + two models
    era_fields = lines[1].split()
    model = build_model("era_s9")
    assert era_fields[:5] == ["era_s9", f"{count_parameters(model):,}", str(receptive_field(model)),
                              "(2,", "10)"]
    assert lines[1].endswith("logits") and lines[2].endswith("log-probabilities")


def test_cli_unknown_name_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert models_main(["era_s9", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "nope" in captured.err and "airbench" in captured.err


def test_cli_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        models_main(["--help"])
    assert info.value.code == 0
    assert "receptive field" in capsys.readouterr().out
