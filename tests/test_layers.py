"""Attention layers against plain reference formulations, MONAI parity, gradients, batch independence."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import TransformerBlock as MonaiTransformerBlock
from monai.networks.nets import UNETR as MonaiUNETR

from common.layers import MultiHeadSelfAttention, TransformerBlock
from common.networks import UNETR
from conftest import parsed_chain

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_attention(layer: MultiHeadSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Explicit ``softmax(q k^T / sqrt(d)) v`` per head."""
    b, n, c = x.shape
    h, d = layer.num_heads, layer.head_dim
    q, k, v = (t.reshape(b, n, h, d).transpose(1, 2) for t in layer.qkv(x).split(c, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    return layer.out_proj((weights @ v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tokens", [27, 64])
def test_self_attention_matches_reference(device: str, tokens: int) -> None:
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(48, num_heads=4, qkv_bias=True).to(device).eval()
    x = torch.randn(2, tokens, 48, device=device)
    torch.testing.assert_close(layer(x), reference_attention(layer, x), atol=1e-4, rtol=1e-4)


def test_self_attention_rejects_bad_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(30, num_heads=4)


def test_transformer_block_loads_monai_weights_and_matches() -> None:
    torch.manual_seed(0)
    monai_block = MonaiTransformerBlock(48, 96, 4, qkv_bias=True).eval()
    block = TransformerBlock(48, 96, 4, qkv_bias=True).eval()
    block.load_state_dict(monai_block.state_dict(), strict=True)
    x = torch.randn(2, 27, 48)
    torch.testing.assert_close(block(x), monai_block(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 1, "out_channels": 4, "img_size": 32, "feature_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4},
        {"in_channels": 2, "out_channels": 3, "img_size": (32, 16, 48), "feature_size": 4, "hidden_size": 32,
         "mlp_dim": 64, "num_heads": 2, "qkv_bias": True, "norm_name": "batch"},
    ],
)
def test_unetr_loads_monai_state_dict_and_gives_same_output(kwargs: dict) -> None:
    torch.manual_seed(0)
    reference = MonaiUNETR(**kwargs).eval()
    ours = UNETR(**kwargs).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert {k: v.shape for k, v in ours.state_dict().items()}.items() <= {
        k: v.shape for k, v in reference.state_dict().items()
    }.items()
    size = kwargs["img_size"] if isinstance(kwargs["img_size"], tuple) else (kwargs["img_size"],) * 3
    x = torch.randn(2, kwargs["in_channels"], *size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-4, rtol=1e-4)


def small_unetr() -> UNETR:
    return UNETR(1, 3, 32, feature_size=4, hidden_size=32, mlp_dim=64, num_heads=2)


def test_unetr_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = small_unetr()
    net(torch.randn(2, 1, 32, 32, 32)).square().mean().backward()
    assert [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


def test_unetr_batch_independence() -> None:
    torch.manual_seed(0)
    net = small_unetr().eval()
    x = torch.randn(2, 1, 32, 32, 32)
    changed = x.clone()
    changed[1] = torch.randn_like(changed[1])
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], net(changed)[0])


def test_unetr_rejects_roi_not_multiple_of_patch() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        UNETR(1, 2, (40, 32, 32))


def test_unetr_traces() -> None:
    net = small_unetr().eval()
    x = torch.randn(1, 1, 32, 32, 32)
    traced = torch.jit.trace(net, x)
    torch.testing.assert_close(traced(x), net(x))


def test_enclosed_background_becomes_the_given_class_and_open_background_stays() -> None:
    from monai.data import MetaTensor

    from common.transforms.postprocessing import FillEnclosedBackgroundd

    labels = MetaTensor(torch.zeros(1, 12, 12, 12), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    labels[0, 2:10, 2:10, 2:10] = 3  # white matter
    labels[0, 4:6, 4:6, 4:6] = 0  # a dark ventricle predicted as background
    labels[0, 2:4, 7:9, 0:12] = 0  # a sulcus open to the outside, away from the ventricle
    filled = FillEnclosedBackgroundd("pred", 1)({"pred": labels})["pred"]
    assert torch.equal(filled[0, 4:6, 4:6, 4:6], torch.ones(2, 2, 2))
    assert torch.equal(filled[0, 2:4, 7:9, 0:12], torch.zeros(2, 2, 12)) and filled[0, 0, 0, 0] == 0
    assert torch.equal(filled.affine, labels.affine)
    for config, key in (("train.json", "validate#postprocessing"), ("inference.json", "postprocessing")):
        assert FillEnclosedBackgroundd in [type(t) for t in parsed_chain(key, config)]
        assert FillEnclosedBackgroundd not in [type(t) for t in parsed_chain(key, config, enclosed_background_class=None)]
