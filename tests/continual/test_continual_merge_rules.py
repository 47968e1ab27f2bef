"""Every merge rule against a short hand-written reference on small tensors, and each merging
method applying (or refusing) the rule."""

from __future__ import annotations

import math

import pytest
import torch

from emulate.continual.merge_rules import MergeError, merge, slerp
from emulate.continual.methods import make_strategy

BASE = {"w": torch.tensor([0.0, 0.0, 0.0, 0.0]), "n": torch.tensor([3])}
MERGED = {"w": torch.tensor([1.0, -2.0, 0.5, 0.0]), "n": torch.tensor([3])}
NEW = {"w": torch.tensor([3.0, 1.0, -0.1, 4.0]), "n": torch.tensor([7])}


def _merge(rule, w=0.5, start=BASE):
    return merge(MERGED, NEW, BASE, start, rule, w)["w"]


def test_interpolate_and_task_arithmetic():
    assert torch.allclose(_merge("interpolate", 0.25), torch.tensor([1.5, -1.25, 0.35, 1.0]))
    assert torch.equal(_merge("interpolation", 0.25), _merge("interpolate", 0.25))
    start = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    # merged + w * (new - start)
    assert torch.allclose(
        _merge("task-arithmetic", 0.5, start), torch.tensor([2.0, -2.0, -0.05, 1.5])
    )
    assert merge(MERGED, NEW, BASE, BASE, "interpolate", 0.5)["n"].item() == 7


def test_magmax_takes_the_larger_entry():
    assert torch.equal(_merge("magmax"), torch.tensor([3.0, -2.0, 0.5, 4.0]))


def test_ties_trims_elects_and_averages_the_agreeing(monkeypatch):
    import emulate.continual.merge_rules as rules

    monkeypatch.setattr(rules, "TIES_DENSITY", 0.4)  # keep the top 2 of 5 per vector
    a, b = torch.tensor([4.0, -3.0, 0.1, 0.2, 2.0]), torch.tensor([2.0, 5.0, 0.3, -0.1, -1.0])
    zero = torch.zeros(5)
    out = merge({"w": a}, {"w": b}, {"w": zero}, {"w": zero}, "ties", 0.5)["w"]
    ta, tb = torch.tensor([4.0, -3.0, 0, 0, 0]), torch.tensor([2.0, 5.0, 0, 0, 0])
    sign = torch.sign(ta + tb)  # [+, +, 0, 0, 0]
    expected = []
    for i in range(5):
        kept = [v for v in (ta[i], tb[i]) if v != 0 and torch.sign(v) == sign[i]]
        expected.append(sum(kept) / len(kept) if kept else 0.0)
    assert torch.allclose(out, torch.tensor(expected))  # [3, 5, 0, 0, 0]


def test_dare_drops_and_rescales():
    torch.manual_seed(0)
    out = _merge("dare", 0.5)
    import emulate.continual.merge_rules as rules

    keep = rules.DARE_DENSITY
    # each entry is 0.5 * (kept_m * m + kept_n * n) / keep with kept_* in {0, 1}
    for i, v in enumerate(out):
        m, n = float(MERGED["w"][i]), float(NEW["w"][i])
        options = {0.5 * (km * m + kn * n) / keep for km in (0, 1) for kn in (0, 1)}
        assert any(math.isclose(float(v), o, abs_tol=1e-6) for o in options)
    torch.manual_seed(0)
    assert torch.equal(out, _merge("dare", 0.5))  # seeded


def test_slerp_on_the_circle():
    out = slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.5)
    assert torch.allclose(out, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    out = slerp(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0]), 1 / 3)
    assert torch.allclose(out, 2 * torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    same = slerp(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]), 0.5)  # parallel: linear
    assert torch.allclose(same, torch.tensor([1.5, 1.5]))


@pytest.mark.parametrize("weight", [float("nan"), 7.0, 0.0, -0.5, float("inf")])
def test_weight_outside_the_unit_interval_is_refused(weight):
    with pytest.raises(MergeError, match="not in"):
        _merge("interpolate", weight)


def test_unknown_rule_and_refusals():
    with pytest.raises(MergeError, match="unknown merge rule"):
        make_strategy("zs-merge", "average")
    with pytest.raises(MergeError, match="coincides"):
        make_strategy("ema-merge", "task-arithmetic")
    with pytest.raises(MergeError, match="coincides"):
        make_strategy("ft-merge", "magmax")


@pytest.mark.parametrize("method", ["ema-merge", "zs-merge", "ft-merge"])
def test_the_rule_changes_what_every_merging_method_measures(method):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)

    def measured(rule):
        m = torch.nn.Linear(3, 2)
        m.load_state_dict(model.state_dict())
        strategy = make_strategy(method, rule, 0.5)
        strategy.prepare(m)
        for task in range(2):
            strategy.task_begin(m, task)
            with torch.no_grad():
                m.weight.add_(torch.linspace(-1, 1, 6).view(2, 3) * (task + 1))
                m.bias.add_(0.3)
            strategy.task_end(m, task, lambda i: {})
        return strategy.eval_model(m).weight.detach().clone()

    assert not torch.allclose(measured("interpolate"), measured("slerp"))
    assert not torch.allclose(measured("interpolate"), measured("ties"))
