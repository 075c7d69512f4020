"""Prints the paper's parameter table as our models count it, or the statistics of any model.

    python -m sharesnet_jax.params
    python -m sharesnet_jax.params --model sharesnet50 --num-classes 100

Counts come from `jax.eval_shape` (no weights allocated) and are compared with the values the
paper printed, to the unit.
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

from sharesnet_jax import cli
from sharesnet_jax.errors import UserError
from sharesnet_jax.tables import markdown_table
from sharesnet_jax.models import SHARE_MODES, create_model, model_spec
from sharesnet_jax.models.stats import (
    abstract_variables, count_params, count_stage_conv3x3_kernels, forward_macs,
)


class PaperRow(NamedTuple):
    plain: str
    shared: str
    num_classes: int
    plain_params: int
    shared_params: int
    label: str


# The exact counts of the paper's networks (../shared/paper.md, "Exact parameter counts").
PAPER_ROWS = (
    PaperRow("cifar_resnet164", "cifar_sharesnet164", 10, 1_703_258, 929_114, "CIFAR ResNet-164"),
    PaperRow("wrn40_4", "sharewrn40_4", 10, 8_949_210, 5_852_634, "WRN-40-4"),
    PaperRow("wrn28_10", "sharewrn28_10", 100, 36_536_884, 26_860_084, "WRN-28-10"),
    PaperRow("resnet34", "sharesnet34", 1000, 21_797_672, 13_613_864, "ResNet-34"),
    PaperRow("resnet50", "sharesnet50", 1000, 25_557_032, 20_469_800, "ResNet-50"),
    PaperRow("resnet101", "sharesnet101", 1000, 44_549_160, 29_434_920, "ResNet-101"),
    PaperRow("resnet152", "sharesnet152", 1000, 60_192_808, 36_821_032, "ResNet-152"),
)


class ModelStats(NamedTuple):
    params: int
    conv3x3_kernels: int
    macs: int


def model_stats(name: str, num_classes: int, **overrides) -> ModelStats:
    model = create_model(name, num_classes=num_classes, **overrides)
    params = abstract_variables(model)["params"]
    return ModelStats(count_params(params), count_stage_conv3x3_kernels(params),
                      forward_macs(model))


def paper_table() -> tuple[str, bool]:
    """The table and whether every count equals the paper's."""
    rows, all_match = [], True
    for row in PAPER_ROWS:
        plain, shared = model_stats(row.plain, row.num_classes), model_stats(row.shared, row.num_classes)
        match = plain.params == row.plain_params and shared.params == row.shared_params
        all_match &= match
        rows.append([
            row.label, str(row.num_classes), f"{plain.params:,}", f"{row.plain_params:,}",
            f"{shared.params:,}", f"{row.shared_params:,}",
            f"{100 * (1 - shared.params / plain.params):.1f}%", "yes" if match else "NO",
            f"{plain.macs / 1e9:.3f}",
        ])
    header = ["model", "classes", "ours original", "paper original", "ours shared",
              "paper shared", "reduction", "match", "GMACs/image"]
    return markdown_table(header, rows), all_match


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


@cli.one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="any registered model name (see list_models())")
    parser.add_argument("--num-classes", type=_positive_int, default=None,
                        help="default: the classes of the family's dataset (10 or 1000)")
    parser.add_argument("--share", choices=SHARE_MODES, default=None)
    args = parser.parse_args(argv)
    if args.model is None:
        table, all_match = paper_table()
        print(table)
        print("all counts match the paper" if all_match else "MISMATCH with the paper")
        return 0 if all_match else 1
    overrides = {} if args.share is None else {"share": args.share}
    try:
        num_classes = args.num_classes or model_spec(args.model).family.num_classes
        stats = model_stats(args.model, num_classes, **overrides)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(markdown_table(["model", "classes", "params", "distinct 3x3 kernels", "GMACs/image"],
                 [[args.model, str(num_classes), f"{stats.params:,}", str(stats.conv3x3_kernels),
                   f"{stats.macs / 1e9:.3f}"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
