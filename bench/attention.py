"""Attention benchmarks on CPU: prints markdown tables (time and peak memory), never asserts.

1. Self-attention, forward + backward: the plain formulation (explicit N x N matrix, as in the
   seed snippets and MONAI's SABlock default) against ``common.layers.MultiHeadSelfAttention`` (SDPA).
2. The papers' dot-product blocks (global aggregation, position attention, window attention, the
   guided attention module), forward + backward: the plain formulation of
   ``tests/test_attention_blocks.py`` against ours.
3. Gaussian-weighted axial attention (MT-UNet), forward: a loop over positions against ours.
4. UNETR at the paper's 96^3 ROI, forward: ``monai.networks.nets.UNETR`` against ours.
5. The other bundles' networks at their default 96^3 ROI (and MONAI's ``AttentionUnet``), forward.

Each case runs in its own process so that its peak resident memory is its own.
Usage: ``python bench/attention.py`` (``make bench``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

REPEATS = 3


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(step, repeats: int = REPEATS) -> dict:
    """Best of ``repeats`` wall times of ``step()`` and the growth of peak resident memory."""
    baseline = _peak_rss_mb()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_mb": _peak_rss_mb() - baseline}


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    return weights @ v


def _attention_case(kind: str, tokens: int, channels: int, heads: int) -> dict:
    from common.layers import MultiHeadSelfAttention

    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(channels, heads)
    if kind == "explicit":
        def forward(x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            q, k, v = layer.qkv(x).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            return layer.out_proj(_explicit_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
    else:
        forward = layer
    x = torch.randn(1, tokens, channels, requires_grad=True)
    return _measure(lambda: forward(x).sum().backward())


def _references():
    """The plain formulations of ``tests/test_attention_blocks.py``, shared with the tests."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import test_attention_blocks

    return test_attention_blocks


BLOCKS = (
    "global aggregation (same, 2 heads)",
    "position attention (PAM, keys C/2)",
    "window attention (window 8, 2 heads)",
    "guided attention module (PAM + CAM)",
)


def _block_case(kind: str, name: str, grid: int, channels: int) -> dict:
    blocks = _references()
    from common.layers import GlobalAggregationBlock, GuidedAttentionModule, PositionAttention, WindowAttention

    torch.manual_seed(0)
    block, reference, inputs = {
        BLOCKS[0]: (GlobalAggregationBlock(channels, channels, channels, channels, num_heads=2),
                    blocks.reference_global_aggregation, 1),
        BLOCKS[1]: (PositionAttention(channels, key_channels=channels // 2), blocks.reference_position_attention, 1),
        BLOCKS[2]: (WindowAttention(channels, window_size=8, num_heads=2), blocks.reference_window_attention, 1),
        BLOCKS[3]: (GuidedAttentionModule(channels // 2, channels // 2), blocks.reference_guided_attention, 2),
    }[name]
    blocks.randomise_(block)
    forward = block if kind == "ours" else (lambda *x: reference(block, *x))
    x = [torch.randn(1, channels // inputs, grid, grid, grid, requires_grad=True) for _ in range(inputs)]
    return _measure(lambda: sum(out.sum() for out in blocks.outputs(forward(*x))).backward())


def _axial_case(kind: str, grid: int, channels: int) -> dict:
    blocks = _references()
    from common.layers import GaussianAxialAttention

    torch.manual_seed(0)
    block = GaussianAxialAttention(channels, num_heads=2)
    x = torch.randn(1, channels, grid, grid, grid)
    forward = block if kind == "ours" else (lambda t: blocks.reference_gaussian_axial(block, t))
    with torch.no_grad():
        return _measure(lambda: forward(x), repeats=REPEATS if kind == "ours" else 1)


def _unetr_case(kind: str, size: int) -> dict:
    from monai.networks.nets import UNETR as MonaiUNETR

    from common.networks import UNETR

    torch.manual_seed(0)
    net = (MonaiUNETR if kind == "monai" else UNETR)(1, 4, size).eval()
    x = torch.randn(1, 1, size, size, size)
    with torch.no_grad():
        return _measure(lambda: net(x))


NETWORKS = (
    "MONAI AttentionUnet (16-128)", "attention_unet (feature 16)", "nonlocal_unet (feature 16)", "ann_net (feature 16)",
    "mt_unet (feature 16, 4 heads)", "msga_net (feature 16)",
)


def _network_case(name: str, size: int) -> dict:
    from monai.networks.nets import AttentionUnet

    from common.networks import ANNNet, AttentionUNet, MSGANet, MTUNet, NonLocalUNet

    torch.manual_seed(0)
    net = {
        NETWORKS[0]: lambda: AttentionUnet(3, 1, 4, channels=(16, 32, 64, 128), strides=(2, 2, 2)),
        NETWORKS[1]: lambda: AttentionUNet(1, 4, 16),
        NETWORKS[2]: lambda: NonLocalUNet(1, 4, 16),
        NETWORKS[3]: lambda: ANNNet(1, 4, 16),
        NETWORKS[4]: lambda: MTUNet(1, 4, 16, num_heads=4),
        NETWORKS[5]: lambda: MSGANet(1, 4, 16),
    }[name]().eval()
    x = torch.randn(1, 1, size, size, size)
    with torch.no_grad():
        result = _measure(lambda: net(x))
    return {**result, "params": sum(p.numel() for p in net.parameters())}


def _run_isolated(case: str, *args) -> dict:
    code = f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import attention; print(json.dumps(attention.{case}(*{args!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{datetime.date.today()} | {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("Self-attention, forward + backward, batch 1, 64 channels, 2 heads (d = 32):\n")
    print("| tokens N | explicit s | SDPA s | speed-up | explicit peak MB | SDPA peak MB | memory ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for grid in (16, 24):
        tokens = grid**3
        plain = _run_isolated("_attention_case", "explicit", tokens, 64, 2)
        fused = _run_isolated("_attention_case", "sdpa", tokens, 64, 2)
        print(f"| {tokens} ({grid}^3) | {plain['seconds']:.3f} | {fused['seconds']:.3f} | "
              f"{plain['seconds'] / fused['seconds']:.1f}x | {plain['peak_mb']:.0f} | {fused['peak_mb']:.0f} | "
              f"{fused['peak_mb'] / max(plain['peak_mb'], 1):.2f}x |")
    print("\nBlocks of the papers, forward + backward, batch 1, 64 channels (d = 32):\n")
    print("| block | tokens N | plain s | ours s | speed-up | plain peak MB | ours peak MB | memory ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in BLOCKS:
        for grid in (16, 24):
            plain = _run_isolated("_block_case", "plain", name, grid, 64)
            fused = _run_isolated("_block_case", "ours", name, grid, 64)
            print(f"| {name} | {grid**3} ({grid}^3) | {plain['seconds']:.3f} | {fused['seconds']:.3f} | "
                  f"{plain['seconds'] / fused['seconds']:.1f}x | {plain['peak_mb']:.0f} | {fused['peak_mb']:.0f} | "
                  f"{fused['peak_mb'] / max(plain['peak_mb'], 1):.2f}x |")
    print("\nGaussian-weighted axial attention, forward, batch 1, 16 channels, 2 heads:\n")
    print("| grid | loop over positions s | ours s | speed-up |")
    print("| --- | --- | --- | --- |")
    for grid in (8, 16):
        loop = _run_isolated("_axial_case", "loop", grid, 16)
        ours = _run_isolated("_axial_case", "ours", grid, 16)
        print(f"| {grid}^3 | {loop['seconds']:.3f} | {ours['seconds']:.4f} | {loop['seconds'] / ours['seconds']:.0f}x |")
    print("\nUNETR, paper size (hidden 768, 12 layers), forward, batch 1, no grad:\n")
    print("| ROI | MONAI UNETR s | ours s | ours / MONAI time | MONAI peak MB | ours peak MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in (96,):
        reference = _run_isolated("_unetr_case", "monai", size)
        ours = _run_isolated("_unetr_case", "ours", size)
        print(f"| {size}^3 | {reference['seconds']:.3f} | {ours['seconds']:.3f} | {ours['seconds'] / reference['seconds']:.2f} | "
              f"{reference['peak_mb']:.0f} | {ours['peak_mb']:.0f} |")

    print("\nThe other bundles' networks at their default ROI (and MONAI's AttentionUnet), forward, batch 1, no grad, 4 classes:\n")
    print("| network | ROI | parameters | forward s | peak MB |")
    print("| --- | --- | --- | --- | --- |")
    for name in NETWORKS:
        result = _run_isolated("_network_case", name, 96)
        print(f"| {name} | 96^3 | {result['params'] / 1e6:.2f} M | {result['seconds']:.3f} | {result['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
