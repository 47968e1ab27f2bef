"""Methods: what each one trains, its penalty, and its merges."""

from __future__ import annotations

import pytest
import torch

from emulate.continual.methods import MethodError, make_strategy
from emulate.continual.methods.base import trainable


def _trainable_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_subsets_and_adapters(continual_data):
    world, _ = continual_data
    bitfit = make_strategy("bitfit").prepare(world.clip().model)
    assert all(n.endswith("bias") for n in _trainable_names(bitfit)) and trainable(bitfit)
    lnfit = make_strategy("lnfit").prepare(world.clip().model)
    assert all("norm" in n or "layrnorm" in n for n in _trainable_names(lnfit))
    for name, marker in (("lora", "lora_"), ("dora", "lora_magnitude"), ("vera", "vera_")):
        model = make_strategy(name).prepare(world.clip().model)
        names = _trainable_names(model)
        assert names and all("lora_" in n or "vera_" in n for n in names)
        assert any(marker in n for n in names)
        for target in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
            assert any(target in n for n in names)


def test_ewc_penalty_pulls_toward_the_anchor(continual_data):
    world, data = continual_data
    clip = world.clip()
    ewc = make_strategy("ewc")
    assert ewc.penalty(clip.model) is None
    batch = {
        **clip.tokens(["a photo of a red .", "a ."] * 4),
        "pixel_values": clip.pixels(data.train["adapt-0"].images[:8]),
    }
    ewc.task_end(clip.model, 0, lambda i: batch)
    assert float(ewc.penalty(clip.model).detach()) == 0.0
    with torch.no_grad():
        for p in clip.model.parameters():
            p.add_(0.01)
    assert float(ewc.penalty(clip.model).detach()) > 0.0


def test_zs_merge_restarts_from_the_original(continual_data):
    world, _ = continual_data
    model = world.clip().model
    zs = make_strategy("zs-merge")
    zs.prepare(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    zs.task_end(model, 0, None)
    merged = zs.eval_model(model).state_dict()
    key = "visual_projection.weight"
    assert torch.allclose(merged[key], original[key] + 0.5)
    zs.task_begin(model, 1)
    assert torch.equal(model.state_dict()[key], original[key])


def test_unknown_method():
    with pytest.raises(MethodError, match="unknown method 'sgd'"):
        make_strategy("sgd")


def test_ema_merge_trains_on_from_the_running_merge(continual_data):
    world, _ = continual_data
    key = "visual_projection.weight"
    for rule in ("interpolation", "dare"):  # dare: entries dropped at 0 or rescaled
        model = world.clip().model
        ema = make_strategy("ema-merge", rule, 0.5)
        ema.prepare(model)
        original = model.state_dict()[key].clone()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        ema.task_end(model, 0, None)
        moved = model.state_dict()[key] - original
        if rule == "dare":  # 0.5 * kept / density
            assert set(moved.flatten().round(decimals=4).tolist()) <= {0.0, 1.0}
        else:
            assert torch.allclose(moved, torch.full_like(moved, 0.5))
        assert ema.eval_model(model) is model


def test_merging_methods_hold_their_copies_off_the_accelerator(continual_data):
    world, _ = continual_data
    model = world.clip().model
    for name in ("ema-merge", "zs-merge", "ft-merge"):
        strategy = make_strategy(name)
        strategy.prepare(model)
        held = [v for state in (strategy.merged, strategy.original) for v in state.values()]
        assert held and all(v.device.type == "cpu" for v in held)
        assert strategy.extra_state_bytes(model) == 0  # no memory beside fine-tuning's


def test_peft_methods_adapt_an_open_clip_model(tmp_path):
    """LoRA takes open_clip's nn.MultiheadAttention modules whole plus its MLP linears; DoRA and
    VeRA, which peft implements for linears only, take the MLP linears; a step moves only the
    adapter and changes the model's output."""
    from continual_real_files import SIZE, open_clip_model

    from emulate.continual.clip import clip_loss, load_clip

    spec = open_clip_model(tmp_path / "oc")
    for name, marker in (("lora", "lora_"), ("dora", "lora_magnitude"), ("vera", "vera_")):
        clip = load_clip(spec)
        model = make_strategy(name).prepare(clip.model)
        names = _trainable_names(model)
        assert names and all("lora_" in n or "vera_" in n for n in names), name
        assert any(marker in n for n in names)
        assert any("c_fc" in n for n in names) and any("c_proj" in n for n in names)
        assert any(".attn." in n and "in_proj" not in n for n in names) == (name == "lora")
        batch = {
            **clip.tokens(["a photo of a cat.", "a photo of a dog."]),
            "pixel_values": torch.randn(2, 3, SIZE, SIZE),
        }
        before = model(**batch, return_loss=False).logits_per_image.detach()
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        optimizer = torch.optim.SGD(trainable(model), lr=1.0)
        clip_loss(model, batch).backward()
        optimizer.step()
        after = model(**batch, return_loss=False).logits_per_image.detach()
        assert not torch.allclose(before, after), name
        for n, p in model.named_parameters():  # peft merges LoRA into an attention module for
            if n in frozen:  # each forward and subtracts it after: float rounding only
                assert torch.allclose(p, frozen[n], atol=1e-6), n
