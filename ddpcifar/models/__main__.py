"""`python -m ddpcifar.models [NAME...]`: print parameters, receptive field and output shape.

All numbers are computed from the built model (a forward pass on CPU), not looked up.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ddpcifar.errors import cli_main
from ddpcifar.models import MODEL_NAMES, build_model
from ddpcifar.models.inspect import count_parameters, receptive_field

_INPUT_SIZE = 32  # the contract: every model takes (N, 3, 32, 32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpcifar.models",
        description="Describe the registered CIFAR-10 models: trainable parameters, receptive "
                    "field (traced through the forward pass; see ddpcifar.models.inspect) and "
                    "the output shape for a (2, 3, 32, 32) input.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models to describe (default: all of {', '.join(MODEL_NAMES)})")
    parser.add_argument("--num-classes", type=int, default=10,
                        help="number of output classes to build with (default: 10)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Print one line per requested model; unknown names are a one-line error (exit 2)."""
    args = _parser().parse_args(argv)
    names = args.names or list(MODEL_NAMES)
    # Build everything before printing, so a bad name or class count prints only the error.
    models = [(name, build_model(name, num_classes=args.num_classes)) for name in names]

    print(f"{'model':<10} {'parameters':>12} {'receptive field':>16} {'output shape':>14}  output")
    for name, model in models:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, 3, _INPUT_SIZE, _INPUT_SIZE))
        kind = "log-probabilities" if model.outputs_log_probs else "logits"
        print(f"{name:<10} {count_parameters(model):>12,} "
              f"{receptive_field(model, _INPUT_SIZE):>16} {str(tuple(out.shape)):>14}  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
