"""Selective TTA (eval.tta_threshold): the augmented views only for the unconfident predictions."""

from __future__ import annotations

import pytest
import torch

from ddpcifar.data.batch import Batch
from ddpcifar.engine.evaluation import evaluate, selective_tta_logits, tta_logits
from ddpcifar.models import build_model

CPU = torch.device("cpu")


def _model_and_images(n: int = 24) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("airbench").to(memory_format=torch.channels_last).eval()
    with torch.no_grad():  # a sharper head than at initialisation: confidences that differ
        model.linear.weight.mul_(40)
    # 16 x 16 pixels: a quarter of the work, and airbench's global max-pool takes any size.
    images = torch.randn(n, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    return model, images, torch.arange(n) % 10


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_threshold_one_is_full_tta_and_a_negative_one_is_none(amp):
    model, images, labels = _model_and_images()
    batches = [Batch(images[:12], labels[:12], torch.arange(12)),
               Batch(images[12:], labels[12:], torch.arange(12, 24))]

    def run(**kw):
        return evaluate(model, batches, num_classes=10, amp_dtype=amp, device=CPU, tta=2, **kw)

    full, one, negative = run(), run(tta_threshold=1.0), run(tta_threshold=-0.5)
    assert one.top1_tta == full.top1_tta and one.tta_images == full.tta_images == 24
    assert negative.top1_tta == negative.top1 == full.top1 and negative.tta_images == 0
    assert one.metrics()["tta_images"] == 24
    with torch.no_grad(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        plain = model(images).float()
        exact, count = selective_tta_logits(model, images, 2, plain, 1.0)
        assert torch.equal(exact, tta_logits(model, images, 2, plain)) and int(count) == 24
        none, count = selective_tta_logits(model, images, 2, plain, -1.0)
        assert torch.equal(none, plain) and int(count) == 0


def test_only_the_unconfident_images_get_the_augmented_views():
    model, images, _ = _model_and_images()
    with torch.no_grad():
        plain = model(images)
        confidence = plain.softmax(1).amax(1)
        threshold = float(confidence.median())
        chosen = confidence <= threshold
        assert 0 < int(chosen.sum()) < len(images)
        out, count = selective_tta_logits(model, images, 2, plain, threshold)
        full = tta_logits(model, images, 2, plain)
    assert int(count) == int(chosen.sum())
    assert torch.equal(out[~chosen], plain[~chosen])  # confident: the plain logits, untouched
    # Unconfident: the full TTA's logits, up to the rounding of a smaller batch.
    torch.testing.assert_close(out[chosen], full[chosen], atol=1e-4, rtol=1e-4)
    # A single unconfident image is evaluated too (as a batch of two equal rows).
    lowest = float(confidence.min())
    out, count = selective_tta_logits(model, images, 1, plain, lowest)
    one = confidence <= lowest
    assert int(count) == int(one.sum()) == 1
    with torch.no_grad():
        torch.testing.assert_close(out[one], tta_logits(model, images, 1, plain)[one],
                                   atol=1e-4, rtol=1e-4)
