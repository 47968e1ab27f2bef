"""Continual-update methods: each one a small strategy with hooks around the one loop."""

from __future__ import annotations

from emulate.common.errors import EmulateError
from emulate.continual.methods.base import Strategy
from emulate.continual.methods.merging import EMAMerge, FTMerge, ZSMerge
from emulate.continual.methods.peft_methods import DoRA, LoRA, VeRA
from emulate.continual.methods.regularizers import EWC, SI
from emulate.continual.methods.subsets import BitFit, LNFit

METHODS = (
    "finetune",
    "lora",
    "dora",
    "vera",
    "bitfit",
    "lnfit",
    "ewc",
    "si",
    "ema-merge",
    "zs-merge",
    "ft-merge",
    "joint",
)


class MethodError(EmulateError, ValueError):
    """An unknown method name."""


def check_method(name: str) -> str:
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return name


def make_strategy(
    name: str,
    merge_rule: str = "interpolate",
    merge_weight: float = 0.5,
    fisher_samples: int | None = None,
):
    """A fresh strategy for ``name`` (``joint`` trains like fine-tuning, on all data at once);
    ``fisher_samples`` is EWC's (None: sized to a share of the budget)."""
    check_method(name)
    if name == "ewc":
        return EWC(fisher_samples=fisher_samples)
    merging = {"ema-merge": EMAMerge, "zs-merge": ZSMerge, "ft-merge": FTMerge}
    if name in merging:
        return merging[name](merge_rule, merge_weight)
    simple = {
        "lora": LoRA,
        "dora": DoRA,
        "vera": VeRA,
        "bitfit": BitFit,
        "lnfit": LNFit,
        "si": SI,
    }
    return simple[name]() if name in simple else Strategy()
