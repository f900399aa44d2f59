"""The MRI local-ratio normalisation against a plain formulation, and what it cancels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandBiasField, ScaleIntensityRanged, ScaleIntensityRangePercentilesd
from scipy import ndimage

from common.errors import InputError, find_input_error
from common.transforms.intensity import GAUSSIAN_TRUNCATION, LocalRatioNormalized, local_ratio, normalization_mode
from conftest import parsed_chain

SPACING = (2.0, 1.5, 3.0)


def brain_like(seed: int = 0) -> np.ndarray:
    """A blob of two tissues with texture, zero outside: ``(D, H, W)``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (24, 32, 20)], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    tissue = np.where(ndimage.gaussian_filter(rng.normal(size=inside.shape), 2) > 0, 100.0, 60.0)
    return np.where(inside, tissue + rng.normal(0, 3, inside.shape), 0.0).astype(np.float32)


def plain_local_ratio(x: np.ndarray, spacing: tuple[float, ...], sigma_mm: float) -> np.ndarray:
    """The same rule with scipy: normalised convolution of the non-zero voxels, reflected edges as MONAI's filter."""
    sigma = [sigma_mm / s for s in spacing]
    inside = (x > 0).astype(np.float64)
    local = ndimage.gaussian_filter(x.astype(np.float64), sigma, mode="constant", truncate=GAUSSIAN_TRUNCATION) / \
        ndimage.gaussian_filter(inside, sigma, mode="constant", truncate=GAUSSIAN_TRUNCATION)
    return np.where(x > 0, x / np.where(x > 0, local, 1.0), 0.0)


def test_local_ratio_matches_the_plain_formulation() -> None:
    x = brain_like()
    ours = local_ratio(torch.as_tensor(x)[None], SPACING, 10.0)[0].numpy()
    np.testing.assert_allclose(ours, plain_local_ratio(x, SPACING, 10.0), rtol=1e-3, atol=1e-4)


def test_a_smooth_bias_field_mostly_cancels_and_the_intensity_scale_cancels() -> None:
    x = brain_like()
    shading = RandBiasField(degree=3, coeff_range=(0.3, 0.3), prob=1.0)
    shading.set_random_state(0)
    field = np.asarray(shading(np.ones((1, *x.shape), dtype=np.float32)))[0]
    inside = x > 0
    assert np.percentile(field[inside], 99) / np.percentile(field[inside], 1) > 1.5  # a strong shading
    clean = local_ratio(torch.as_tensor(x)[None], SPACING, 5.0)[0].numpy()  # a tenth of the volume, as 20 mm of a brain
    shaded = local_ratio(torch.as_tensor(7.0 * x * field)[None], SPACING, 5.0)[0].numpy()
    before = np.abs(x * field / np.mean(x[inside] * field[inside]) - x / x[inside].mean())[inside].mean()
    after = np.abs(shaded - clean)[inside].mean()
    assert after < before / 2  # the shading changes the normalised image less than half as much
    assert np.all(shaded[~inside] == 0)


def test_the_transform_keeps_the_metadata_and_reads_the_voxel_size() -> None:
    x = brain_like()
    image = MetaTensor(torch.as_tensor(x)[None], affine=torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64)))
    out = LocalRatioNormalized("image", 10.0)({"image": image})["image"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, image.affine)
    np.testing.assert_allclose(out[0].numpy(), plain_local_ratio(x, SPACING, 10.0), rtol=1e-3, atol=1e-4)


def test_the_config_chooses_it_and_a_missing_sigma_is_named() -> None:
    """The loading chain lists every mode's transforms; ``normalization`` enables one of them."""
    normalizers = {LocalRatioNormalized, ScaleIntensityRangePercentilesd, ScaleIntensityRanged}
    chosen = lambda normalization: [type(t) for t in parsed_chain(normalization=normalization) if type(t) in normalizers]
    assert chosen({"mode": "local_ratio", "sigma_mm": 20}) == [LocalRatioNormalized]
    assert chosen({"mode": "percentile", "lower": 0.5, "upper": 99.5}) == [ScaleIntensityRangePercentilesd]
    ct = {"mode": "ct", "clip": [-100.0, 900.0], "mean": 200.0, "std": 150.0}
    assert chosen(ct) == [ScaleIntensityRanged]
    window = next(t for t in parsed_chain(normalization=ct) if isinstance(t, ScaleIntensityRanged))
    hounsfield = torch.tensor([[-1000.0, -100.0, 200.0, 650.0, 900.0, 3000.0]])
    expected = (hounsfield.clamp(-100.0, 900.0) - 200.0) / 150.0  # clipped, then z-scored
    torch.testing.assert_close(torch.as_tensor(window({"image": hounsfield})["image"]), expected)
    with pytest.raises(Exception) as raised:
        parsed_chain(normalization={"mode": "local_ratio"})
    assert "sigma_mm" in str(find_input_error(raised.value))
    with pytest.raises(InputError, match="unknown mode 'zscore'"):
        normalization_mode({"mode": "zscore"})


def test_a_non_positive_sigma_and_an_image_without_voxel_size_are_refused() -> None:
    with pytest.raises(InputError, match="sigma_mm must be positive, got 0.0"):
        normalization_mode({"mode": "local_ratio", "sigma_mm": 0})
    with pytest.raises(TypeError, match="image: needs a MetaTensor"):
        LocalRatioNormalized("image", 10.0)({"image": torch.ones(1, 4, 4, 4)})
