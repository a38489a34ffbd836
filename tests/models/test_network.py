from __future__ import annotations

import pytest
import torch
from torch import nn

from heritage_cnn.models.network import (
    HeritageNet,
    ModelConfig,
    build_model,
    conv_layers,
    eval_mode,
    fold_batch_norm,
    forward_flops,
    layer,
    parameter_count,
)


def test_default_model_fits_the_budget() -> None:
    model = build_model()
    assert parameter_count(model) <= 2_000_000
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)


def test_layers_have_stable_names() -> None:
    model = build_model(widths=(8, 16, 32), blocks=(1, 2, 1))
    names = list(conv_layers(model))
    assert names[0] == "stage1.block1.conv"
    assert "stage2.block2.conv2" in names and "stage2.block1.shortcut.conv" in names
    assert isinstance(layer(model, "stage2.pool"), torch.nn.MaxPool2d)
    with pytest.raises(KeyError, match=r"stage1\.block1\.conv"):
        layer(model, "conv99")
    assert all(k.startswith(("stage", "head")) for k in model.state_dict())


def test_plain_network_has_no_shortcuts() -> None:
    model = build_model(widths=(8, 16), blocks=(1, 1), residual=False)
    assert all("shortcut" not in name for name in conv_layers(model))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_config_round_trip_and_validation() -> None:
    config = ModelConfig(widths=(8, 16), blocks=(1, 1), num_classes=4)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        ModelConfig(widths=(8, 16), blocks=(1,))
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"depth": 3})


def test_an_enlarging_network_sees_the_photo_at_its_scale() -> None:
    """input_scale 1.5: the stem runs at 96 px on a 64 px photo, the weights are those of an ordinary network."""
    plain, enlarged = (
        build_model(widths=(8, 16), blocks=(1, 1)),
        build_model(widths=(8, 16), blocks=(1, 1), input_scale=1.5),
    )
    assert enlarged.state_dict().keys() == plain.state_dict().keys()
    seen = {}
    enlarged.stage1.register_forward_pre_hook(lambda m, i: seen.update(stem_input=i[0].shape))
    assert enlarged(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert seen["stem_input"][-2:] == (96, 96)
    assert ModelConfig.from_dict(enlarged.config.to_dict()).input_scale == 1.5
    assert (
        ModelConfig.from_dict({k: v for k, v in plain.config.to_dict().items() if k != "input_scale"}) == plain.config
    )
    for bad in (0.5, 5):
        with pytest.raises(ValueError, match="input_scale"):
            ModelConfig(input_scale=bad)


def test_flop_count_matches_hand_count() -> None:
    model = HeritageNet(ModelConfig(widths=(4,), blocks=(1,), stem_kernel=3, hidden=8, num_classes=2))
    conv = 64 * 64 * 4 * 3 * 9 * 2  # output pixels x out channels x in channels x kernel x (mul + add)
    linear = 2 * (4 * 8 + 8 * 2)
    assert forward_flops(model) == conv + linear


def test_folding_batch_norm_keeps_the_outputs() -> None:
    model = build_model(widths=(8, 16), blocks=(1, 2)).eval()
    for module in model.modules():  # non-trivial statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    folded = fold_batch_norm(model)
    x = torch.randn(4, 3, 64, 64)
    assert torch.allclose(model(x), folded(x), atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_a_stem_that_pools_first_is_the_same_weights_in_another_order() -> None:
    """stem_pool_first: conv, pool, batch norm, ReLU; the same weights as the usual stem, the pool inside the block.
    With positive batch-norm scales the two orders compute the same function (max commutes with x -> s x + t)."""
    usual, pooled = (
        build_model(widths=(8, 16), blocks=(1, 1)).eval(),
        build_model(widths=(8, 16), blocks=(1, 1), stem_pool_first=True).eval(),
    )
    assert pooled.state_dict().keys() == usual.state_dict().keys()
    assert "stage1.pool" not in dict(pooled.named_modules()) and isinstance(pooled.stage1.block1.pool, nn.MaxPool2d)
    for module in usual.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.weight.data.uniform_(0.5, 1.5)
    pooled.load_state_dict(usual.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(pooled(x), usual(x))
    usual.stage1.block1.bn.weight.data[0] = -1.0  # a negative scale: max no longer commutes, the orders differ
    pooled.load_state_dict(usual.state_dict())
    assert not torch.allclose(pooled.features(x), usual.features(x))
    saved = {k: v for k, v in usual.config.to_dict().items() if k != "stem_pool_first"}  # an older checkpoint
    assert ModelConfig.from_dict(saved).stem_pool_first is False
    with pytest.raises(ValueError, match="stem_pool_first"):
        ModelConfig(widths=(8, 16), blocks=(2, 1), stem_pool_first=True)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["positive_scales", "a_negative_scale"])
def test_folding_a_stem_that_pools_first(sign: float) -> None:
    """Folded only where every scale is non-negative; otherwise the block keeps its batch norm and its outputs."""
    model = build_model(widths=(8, 16), blocks=(1, 1), stem_pool_first=True).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.weight.data.uniform_(0.5, 1.5)
    model.stage1.block1.bn.weight.data[0] *= sign
    folded = fold_batch_norm(model)
    x = torch.randn(4, 3, 64, 64)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
    assert isinstance(folded.stage1.block1.bn, nn.BatchNorm2d) == (sign < 0)


def test_eval_mode_gives_each_module_its_own_mode_back() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(), torch.nn.Sequential(torch.nn.ReLU()))
    model.train()
    model[1].eval()
    with pytest.raises(KeyError), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise KeyError("stop")
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
