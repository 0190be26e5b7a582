"""Selective TTA on a trained checkpoint: accuracy and cost per threshold, beside full TTA.

The plain and the full test-time-augmented logits of every test image are computed once; each
threshold then picks the images whose plain confidence (max softmax probability) is at most it,
and their TTA prediction replaces the plain one. Reported per threshold: top-1 with TTA, the
images that got the augmented views, and the forward passes that costs against full TTA. Then
`ddpcifar.engine.evaluation.evaluate` itself is timed at full TTA and at each `--time`
threshold (what a run's final evaluation pays).

    python benchmarks/selective_tta.py runs/airbench94/checkpoints/last.pt --data data/cifar10 \\
        --thresholds 0.3 0.4 0.5 0.6 0.7 0.8 --time 0.5 0.7 --out result.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, load_average, machine, this_command  # noqa: E402

from ddpcifar.data.config import AugmentConfig, DataConfig  # noqa: E402
from ddpcifar.data.loaders import build_loader  # noqa: E402
from ddpcifar.engine.checkpoint import load_checkpoint  # noqa: E402
from ddpcifar.engine.evaluation import evaluate, tta_logits  # noqa: E402
from ddpcifar.engine.state import load_model  # noqa: E402
from ddpcifar.engine.wrap import resolve_amp  # noqa: E402

VIEWS = {1: 1, 2: 5}  # extra forward passes per image that TTA level 1 or 2 adds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/cifar10"))
    parser.add_argument("--tta", type=int, choices=(1, 2), default=2)
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    parser.add_argument("--time", type=float, nargs="*", default=[],
                        help="thresholds whose whole evaluation is timed beside full TTA")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    load_before = load_average()
    device = torch.device("cpu")
    state = load_checkpoint(args.checkpoint)
    model = load_model(state, args.checkpoint, device).eval()
    amp = resolve_amp(state["amp"], device)
    norm = state["normalization"]
    test = build_loader(DataConfig(dir=args.data, loader="memory"), AugmentConfig(kind="none"),
                        split="test", batch_size=1000, train=False, rank=0, world_size=1,
                        seed=0, device=device, mean=norm["mean"], std=norm["std"])
    conf, plain_hit, tta_hit = [], [], []
    with torch.no_grad(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        for batch in test:
            plain = model(batch.images).float()
            full = tta_logits(model, batch.images, args.tta, plain)
            conf.append(plain.softmax(1).amax(1))
            plain_hit.append(plain.argmax(1) == batch.labels)
            tta_hit.append(full.argmax(1) == batch.labels)
    conf_t, plain_t, tta_t = torch.cat(conf), torch.cat(plain_hit), torch.cat(tta_hit)
    n = len(conf_t)
    rows = []
    for threshold in sorted(args.thresholds):
        chosen = conf_t <= threshold
        hit = torch.where(chosen, tta_t, plain_t)
        picked = int(chosen.sum())
        rows.append({"threshold": threshold, "top1_tta": float(hit.float().mean()),
                     "tta_images": picked,
                     # forwards relative to full TTA: 1 plain pass each, VIEWS more if chosen
                     "forward_share": (n + VIEWS[args.tta] * picked) / (n * (1 + VIEWS[args.tta]))})
    summary = {"top1": float(plain_t.float().mean()), "top1_tta_full": float(tta_t.float().mean()),
               "count": n, "confidence_quantiles": {
                   str(q): round(float(conf_t.quantile(q)), 4) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}}
    timed = []
    for threshold in [None, *args.time]:
        t0 = time.perf_counter()
        result = evaluate(model, test, num_classes=state["num_classes"], amp_dtype=amp,
                          device=device, tta=args.tta, tta_threshold=threshold)
        timed.append({"threshold": threshold, "seconds": round(time.perf_counter() - t0, 2),
                      "top1_tta": result.top1_tta, "tta_images": result.tta_images})
    out = {"checkpoint": str(args.checkpoint), "tta": args.tta, **summary, "thresholds": rows,
           "timed": timed, "machine": machine(), "commit": commit(), "command": this_command(),
           "load_before": load_before, "load_after": load_average()}
    print(f"top1 {summary['top1']:.2%}, full TTA{args.tta} {summary['top1_tta_full']:.2%}, "
          f"confidence quantiles {summary['confidence_quantiles']}")
    print(f"{'threshold':>9} {'top1 TTA':>9} {'images':>7} {'forwards':>8}")
    for r in rows:
        print(f"{r['threshold']:>9.2f} {r['top1_tta']:>9.2%} {r['tta_images']:>7} "
              f"{r['forward_share']:>8.1%}")
    for t in timed:
        print(f"evaluate, threshold {t['threshold']}: {t['seconds']} s, top1 TTA "
              f"{t['top1_tta']:.2%}, {t['tta_images']} images augmented")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
