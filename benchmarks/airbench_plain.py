"""The airbench94 recipes as one plain PyTorch script: the baseline ddpcifar is measured against.

No ddpcifar code: the data comes straight from the prepared betons through FFCV, and the
network, whitening, optimizers, schedule, lookahead, augmentation and test-time augmentation
are written out here, so a reader can check a recipe in one file. Two recipes:
  airbench94       SGD, batch 1024, 9.9 epochs, warmup/warmdown, lookahead;
  airbench94_muon  Muon for the convolution filters and SGD for the rest, batch 2000, 8 epochs,
                   linear decay, the head at lr 0.67 with std-1 weights and outputs / 256.
The timing follows airbench's convention: whitening + training steps + the final TTA
evaluation; reading the data and start-up are excluded, and there are no evaluations during
training. The levers ddpcifar has, so that comparisons stay fair: `--compile [MODE]`
(torch.compile of the network; its graphs are compiled before the clock starts, on throwaway
inputs with the state put back, and reported as compile_s apart from the time), and
`--tta-threshold P` (selective TTA: the augmented views only for the predictions whose
confidence is at most P). Muon orthogonalises same-shape filters as one batched stack.

    python benchmarks/airbench_plain.py --data data/cifar10 --seed 0 --out result.json
    python benchmarks/airbench_plain.py --recipe airbench94_muon --seed 0
    python benchmarks/airbench_plain.py --compile --tta-threshold 0.9 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HYP = {
    "epochs": 9.9, "batch_size": 1024, "lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153,
    "bias_scaler": 64.0, "label_smoothing": 0.2, "whiten_bias_epochs": 3, "translate": 2,
    "widths": (64, 256, 256), "bn_momentum": 0.4, "scaling_factor": 1 / 9, "tta_level": 2,
    "whiten_samples": 5000, "whiten_eps": 5e-4,
}
# The Muon recipe's own numbers, in torch units (lr per step of a summed loss over the batch).
MUON_HYP = {
    "epochs": 8, "batch_size": 2000, "bias_lr": 0.053, "head_lr": 0.67, "weight_decay": 0.004,
    "momentum": 0.85, "filter_lr": 0.24, "filter_momentum": 0.6, "ns_steps": 3,
    "scaling_factor": 1 / 256,
}


def read_beton(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N,3,32,32) uint8 and labels (N,) int64 of a beton, in file order."""
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    loader = Loader(path, batch_size=5000, num_workers=2, order=OrderOption.SEQUENTIAL, seed=0,
                    drop_last=False,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    images, labels = zip(*[(np.array(x), np.array(y)) for x, y in loader])
    images = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(np.concatenate(labels).reshape(-1).astype(np.int64))


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=HYP["bn_momentum"])
        self.norm2 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=HYP["bn_momentum"])
        for conv in (self.conv1, self.conv2):  # identity on the first c_in filters
            nn.init.dirac_(conv.weight.data[: conv.in_channels])
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)  # scale frozen at 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Net(nn.Module):
    def __init__(self, scaling_factor: float) -> None:
        super().__init__()
        w1, w2, w3 = HYP["widths"]
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        self.groups = nn.Sequential(ConvGroup(24, w1), ConvGroup(w1, w2), ConvGroup(w2, w3))
        self.head = nn.Linear(w3, 10, bias=False)
        self.scaling_factor = scaling_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(x.amax(dim=(2, 3))) * self.scaling_factor


@torch.no_grad()
def orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Newton-Schulz quintic iterations (Muon's coefficients) towards the nearest orthogonal
    matrix, for one (m, n) matrix or a (b, m, n) stack of them (one batched matmul each)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm at most 1
    tall = x.size(-2) > x.size(-1)
    x = x.mT if tall else x
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).float()


class FilterMuon:
    """Muon on 4-d filters: Nesterov momentum, each filter tensor renormalised to norm
    sqrt(out_channels), then a step along the orthogonalised (out, in*k*k) update; filters of
    the same shape are orthogonalised together as one stack."""

    def __init__(self, filters: list[nn.Parameter], lr: float, momentum: float, ns_steps: int) -> None:
        self.filters, self.lr, self.momentum, self.ns_steps = filters, lr, momentum, ns_steps
        self.buffers = [torch.zeros_like(p) for p in filters]
        self.shapes: dict[torch.Size, list[int]] = {}
        for i, p in enumerate(filters):
            self.shapes.setdefault(p.shape, []).append(i)

    @torch.no_grad()
    def step(self, factor: float) -> None:
        updates = []
        for p, buf in zip(self.filters, self.buffers):
            buf.mul_(self.momentum).add_(p.grad)
            updates.append(p.grad.add(buf, alpha=self.momentum))
            p.mul_(len(p) ** 0.5 / p.norm())
        for shape, members in self.shapes.items():
            stack = torch.stack([updates[i].reshape(shape[0], -1) for i in members])
            for i, update in zip(members, orthogonalize(stack, self.ns_steps)):
                self.filters[i].sub_(update.view(shape), alpha=self.lr * factor)

    def zero_grad(self) -> None:
        for p in self.filters:
            p.grad = None


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor) -> None:
    """Filters = eigenvectors of the 2x2-patch covariance / sqrt(eigenvalue + eps), with both signs."""
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (vectors.T / torch.sqrt(values + HYP["whiten_eps"])[:, None]).reshape(12, 3, 2, 2)
    conv.weight.copy_(torch.cat([filters, -filters]).float())
    conv.weight.requires_grad_(False)
    conv.bias.zero_()


def augmented_epoch(padded: torch.Tensor, flips: torch.Tensor, epoch: int, gen: torch.Generator) -> torch.Tensor:
    """Alternating flip (each image's own flip, mirrored on odd epochs) + a random 2-px translation."""
    n, pad = len(padded), HYP["translate"]
    mirror = flips ^ bool(epoch % 2)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    rows = dy[:, None] + torch.arange(32)[None]  # (n, 32) padded row of each output row
    cols = dx[:, None] + torch.arange(32)[None]
    cols = torch.where(mirror[:, None], (31 + 2 * pad) - cols, cols)
    idx = torch.arange(n)[:, None, None]
    return padded[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (n,3,32,32)


def tta_logits(net: nn.Module, x: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
    """Mirror and 1-pixel translations; every view channels-last (a compiled net guards on strides)."""
    def view(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    def mirror(x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * ((net(x) if base is None else base) + net(view(x.flip(-1))))
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [view(padded[:, :, :32, :32]), view(padded[:, :, 2:, 2:])]
    return 0.5 * mirror(x, plain) + 0.25 * (mirror(shifted[0]) + mirror(shifted[1]))


def selective_tta(net: nn.Module, x: torch.Tensor, plain: torch.Tensor,
                  threshold: float | None) -> tuple[torch.Tensor, int]:
    """TTA logits for the predictions with confidence at most `threshold` (None: all), plain
    logits for the rest, and how many got TTA."""
    if threshold is None:
        return tta_logits(net, x, plain), len(x)
    low = plain.float().softmax(1).amax(1) <= threshold
    n = int(low.sum())
    if n in (0, len(x)):
        return (plain if n == 0 else tta_logits(net, x, plain)), n
    picked, picked_plain = x[low], plain[low]
    if n == 1:  # two rows: a compiled net keeps its one dynamic-batch graph
        picked, picked_plain = picked.expand(2, -1, -1, -1), picked_plain.expand(2, -1)
    out = plain.clone()
    out[low] = tta_logits(net, picked.contiguous(memory_format=torch.channels_last),
                          picked_plain)[:n].to(out.dtype)
    return out, n


def warm_up(net: nn.Module, model: nn.Module, bs: int, switches: list[torch.Tensor]) -> float:
    """Compile every graph the run meets: a training forward and backward for each state of the
    `switches` (parameters whose requires_grad the recipe toggles: a compiled graph guards on
    it), and an evaluation forward with a dynamic batch; the state is put back. Seconds."""
    t0 = time.perf_counter()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    x = torch.randn(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (bs,))
    model.train()
    for frozen in (False, True):
        for p in switches:
            p.requires_grad_(not frozen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
    for p in model.parameters():
        p.grad = None
    for p in switches:
        p.requires_grad_(True)
    model.eval()
    x = torch.randn(1000, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    torch._dynamo.maybe_mark_dynamic(x, 0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    model.load_state_dict(saved)
    torch.set_rng_state(rng)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/cifar10", help="prepared data directory (betons)")
    parser.add_argument("--recipe", choices=("airbench94", "airbench94_muon"), default="airbench94")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, help="default: the recipe's (9.9 or 8)")
    parser.add_argument("--max-samples", type=int, default=None, help="evenly spaced subset (smoke runs)")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's (smoke runs only)")
    parser.add_argument("--micro-batch", type=int, metavar="N",
                        help="gradient accumulation: forward and backward N images at a time "
                             "(default: the whole batch)")
    parser.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                        help="torch.compile the network (MODE: default, max-autotune, ...)")
    parser.add_argument("--tta-threshold", type=float, metavar="P",
                        help="selective TTA: only predictions with confidence <= P (default: all)")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    muon = args.recipe == "airbench94_muon"
    hyp = MUON_HYP if muon else HYP
    args.epochs = args.epochs or hyp["epochs"]
    torch.manual_seed(args.seed)
    memory = torch.channels_last

    threads = torch.get_num_threads()  # importing FFCV sets it to 1
    train_x, train_y = read_beton(f"{args.data}/train.beton")
    test_x, test_y = read_beton(f"{args.data}/test.beton")
    if args.max_samples:
        keep = lambda n: (torch.arange(args.max_samples) * n) // args.max_samples  # noqa: E731
        tk, sk = keep(len(train_y)), keep(len(test_y))
        train_x, train_y, test_x, test_y = train_x[tk], train_y[tk], test_x[sk], test_y[sk]
    mean = train_x.float().mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.float().std(dim=(0, 2, 3), keepdim=True)
    normalize = lambda x: ((x.float() - mean) / std).contiguous(memory_format=memory)  # noqa: E731
    pad = HYP["translate"]
    padded = F.pad(train_x.float(), (pad,) * 4, mode="reflect").to(torch.uint8).permute(0, 2, 3, 1)
    test_images = normalize(test_x)
    torch.set_num_threads(threads)

    bs, n = args.batch_size or hyp["batch_size"], len(train_y)
    steps_per_epoch = n // bs
    total_steps = math.ceil(steps_per_epoch * args.epochs - 1e-9)
    net = Net(hyp["scaling_factor"]).to(memory_format=memory)
    norm = [p for name, p in net.named_parameters() if "norm" in name and p.requires_grad]
    filter_muon = None
    if muon:
        with torch.no_grad():
            net.head.weight.div_(net.head.weight.std())  # std-1 head weights, outputs / 256
        m, wd, bias_lr = MUON_HYP["momentum"], MUON_HYP["weight_decay"], MUON_HYP["bias_lr"]
        whiten_steps = steps_per_epoch * HYP["whiten_bias_epochs"]
        opt = torch.optim.SGD([dict(params=[net.whiten.bias], lr=bias_lr, weight_decay=wd / bias_lr),
                               dict(params=norm, lr=bias_lr, weight_decay=wd / bias_lr),
                               dict(params=[net.head.weight], lr=MUON_HYP["head_lr"],
                                    weight_decay=wd / MUON_HYP["head_lr"])],
                              momentum=m, nesterov=True)
        filters = [p for p in net.groups.parameters() if p.ndim == 4]
        filter_muon = FilterMuon(filters, MUON_HYP["filter_lr"], MUON_HYP["filter_momentum"],
                                 MUON_HYP["ns_steps"])
        factor = lambda s: 1 - s / total_steps  # noqa: E731
        factors = [lambda s: max(0.0, 1 - s / whiten_steps), factor, factor]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
    else:
        kilostep = 1024 * (1 + 1 / (1 - HYP["momentum"]))
        lr = HYP["lr"] / kilostep
        wd = HYP["weight_decay"] * bs / kilostep
        lr_norm = lr * HYP["bias_scaler"]
        rest = [p for name, p in net.named_parameters() if "norm" not in name and p.requires_grad]
        opt = torch.optim.SGD([dict(params=norm, lr=lr_norm, weight_decay=wd / lr_norm),
                               dict(params=rest, lr=lr, weight_decay=wd / lr)],
                              momentum=HYP["momentum"], nesterov=True)
        warm = int(0.23 * total_steps)
        factor = lambda s: (0.2 + 0.8 * s / warm if s < warm  # noqa: E731
                            else 1.0 - 0.93 * (s - warm) / (total_steps - warm))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(args.seed)
    flips = torch.rand(n, generator=gen) < 0.5

    t0 = time.perf_counter()
    whiten_idx = (torch.arange(HYP["whiten_samples"]) * n) // HYP["whiten_samples"]
    init_whitening(net.whiten, normalize(train_x[whiten_idx]))
    floats = lambda: {k: v for k, v in model.state_dict().items() if v.is_floating_point()}  # noqa: E731
    average: dict[str, torch.Tensor] = {}
    step, times = 0, {"whitening_s": time.perf_counter() - t0}
    model, compile_s = net, None  # `model`: the plain module, whose state_dict has plain names
    if args.compile:  # after the whitening: the frozen stem weight is part of what is compiled
        net = torch.compile(model, mode=args.compile)
        compile_s = warm_up(net, model, min(args.micro_batch or bs, bs), [model.whiten.bias])

    t0 = time.perf_counter()
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        net.whiten.bias.requires_grad_(epoch < HYP["whiten_bias_epochs"])
        images = augmented_epoch(padded, flips, epoch, gen)
        order = torch.randperm(n, generator=gen)
        net.train()
        for i in range(steps_per_epoch):
            idx = order[i * bs:(i + 1) * bs]
            opt.zero_grad(set_to_none=True)
            if filter_muon:
                filter_muon.zero_grad()
            for part in idx.split(args.micro_batch or bs):  # summed losses: gradients add up
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = net(normalize(images[part]))
                F.cross_entropy(logits.float(), train_y[part], label_smoothing=HYP["label_smoothing"],
                                reduction="sum").backward()
            if filter_muon:
                filter_muon.step(factor(step))
            opt.step()
            sched.step()
            step += 1
            if not muon and epoch >= 3 and step % 5 == 0:  # lookahead: pull into the average, reset to it
                decay = 0.95 ** 5 * (step / total_steps) ** 3 if average else 0.0
                average = average or {k: v.clone() for k, v in floats().items()}
                with torch.no_grad():
                    for k, v in floats().items():
                        average[k].lerp_(v, 1 - decay)
                        v.copy_(average[k])
            if step >= total_steps:
                break
        if average:  # after each epoch the weights become the average
            with torch.no_grad():
                for k, v in floats().items():
                    v.copy_(average[k])
    times["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    net.eval()
    correct = correct_tta = tta_images = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(test_y), 1000):
            x, y = test_images[start:start + 1000], test_y[start:start + 1000]
            plain = net(x)
            correct += int((plain.argmax(1) == y).sum())
            logits, picked = selective_tta(net, x, plain, args.tta_threshold)
            correct_tta += int((logits.argmax(1) == y).sum())
            tta_images += picked
    times["final_eval_s"] = time.perf_counter() - t0
    result = {"top1": correct / len(test_y), "top1_tta": correct_tta / len(test_y),
              "time_to_accuracy_s": sum(times.values()), **times, "steps": step,
              "epochs": args.epochs, "recipe": args.recipe, "seed": args.seed,
              "threads": torch.get_num_threads(),
              "images_per_s": step * bs / times["train_s"],
              # compile_s is apart from time_to_accuracy_s: airbench times a warmed-up run.
              "micro_batch": args.micro_batch,
              "compile": args.compile, "compile_s": compile_s,
              "tta_threshold": args.tta_threshold, "tta_images": tta_images}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
