"""Muon's Newton-Schulz batched over same-shape matrices equals torch.optim.Muon's one-by-one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim._muon import _zeropower_via_newtonschulz

from ddpcifar.engine.optim import NS_COEFFICIENTS, NS_EPS, BatchedMuon, orthogonalize

# bf16 keeps 8 bits of mantissa (relative rounding 2^-9); a few Newton-Schulz steps of bf16
# matmuls with fp32 accumulation spread that to about 1% of the entries' size.
BF16_ATOL = 1e-2


def test_one_matrix_takes_torch_muons_exact_operations():
    torch.manual_seed(0)
    for shape in ((16, 40), (40, 16)):  # wide, and tall (iterated transposed)
        g = torch.randn(shape)
        ours = orthogonalize(g, 5)
        assert torch.equal(ours, _zeropower_via_newtonschulz(g, NS_COEFFICIENTS, 5, NS_EPS))


@pytest.mark.parametrize("shape", [(32, 96), (96, 32)])
def test_a_stack_equals_each_matrix_alone_within_bf16_tolerance(shape):
    torch.manual_seed(1)
    stack = torch.randn(3, *shape) * torch.tensor([1.0, 10.0, 0.01])[:, None, None]
    batched = orthogonalize(stack, 3).float()
    for g, out in zip(stack, batched):
        alone = orthogonalize(g, 3).float()
        scale = alone.abs().max()
        torch.testing.assert_close(out, alone, atol=BF16_ATOL * scale, rtol=0)
        # Orthogonalised: the singular values sit in Newton-Schulz's band around 1, whatever
        # the input's scale (each matrix is normalised by its own norm).
        s = torch.linalg.svdvals(out)
        assert 0.3 < float(s.min()) and float(s.max()) < 1.3


def test_batched_muon_follows_torch_muon_over_steps():
    """Three same-shape filters (one stack), a tall one and a lone shape, over five steps."""
    torch.manual_seed(2)
    shapes = [(24, 72), (24, 72), (24, 72), (72, 24), (8, 27)]
    init = [torch.randn(s) * 0.1 for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(5)]
    ours = [nn.Parameter(t.clone()) for t in init]
    ref = [nn.Parameter(t.clone()) for t in init]
    opt = BatchedMuon(ours, lr=0.05, momentum=0.6, nesterov=True, ns_steps=3)
    torch_opt = torch.optim.Muon(ref, lr=0.05, momentum=0.6, nesterov=True, weight_decay=0.0,
                                 ns_steps=3)
    for step in grads:
        for p, q, g in zip(ours, ref, step):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        torch_opt.step()
    for p, q, t in zip(ours, ref, init):
        moved = (q.detach() - t).abs().max()
        assert moved > 0.02  # five steps of lr 0.05 moved every matrix
        torch.testing.assert_close(p.detach(), q.detach(), atol=BF16_ATOL * moved, rtol=0)
    # The shapes that were alone in their bucket took exactly torch's operations.
    for i in (3, 4):
        assert torch.equal(ours[i].detach(), ref[i].detach())
    # The same state and group keys as torch.optim.Muon: a checkpoint moves between the two.
    back = BatchedMuon([nn.Parameter(t.clone()) for t in init], lr=0.05, momentum=0.6,
                       nesterov=True, ns_steps=3)
    back.load_state_dict(torch_opt.state_dict())
    for p, q in zip(back.param_groups[0]["params"], ref):
        torch.testing.assert_close(back.state[p]["momentum_buffer"],
                                   torch_opt.state[q]["momentum_buffer"], atol=0, rtol=0)
