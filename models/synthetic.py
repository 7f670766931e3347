"""Seeded generators of realistic (structured, non-constant) inputs for parity checks.

These feed the conformance matrix, where no labels are needed. Labelled evaluation data comes from real
datasets (see the README's per-family notes); these generators never stand in for accuracy.
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def smooth_series(rng: np.random.Generator, batch: int, steps: int, channels: int, n_waves: int = 4) -> np.ndarray:
    """[batch, steps, channels] float32: sums of low-frequency sinusoids plus small noise, roughly in [-1, 1]."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float64)[None, :, None, None]
    freq = rng.uniform(0.5, 6.0, size=(batch, 1, channels, n_waves))
    phase = rng.uniform(0, 2 * np.pi, size=(batch, 1, channels, n_waves))
    amp = rng.uniform(0.1, 0.5, size=(batch, 1, channels, n_waves))
    x = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(-1)
    x += 0.02 * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def unit_interval_series(rng: np.random.Generator, batch: int, steps: int, channels: int) -> np.ndarray:
    """Smooth trajectories confined to [0, 1] (normalised keypoint / position coordinates)."""
    x = smooth_series(rng, batch, steps, channels)
    centre = rng.uniform(0.3, 0.7, size=(batch, 1, channels)).astype(np.float32)
    return np.clip(centre + 0.35 * x, 0.0, 1.0).astype(np.float32)


def natural_image(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """[batch, 3, H, W] RGB in [0, 1] with a 1/f spectrum (natural-image statistics) and hard edges."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    spectrum_shape = (batch, 3, height, width // 2 + 1)
    noise = rng.standard_normal(spectrum_shape) + 1j * rng.standard_normal(spectrum_shape)
    img = np.fft.irfft2(noise / radius**1.2, s=(height, width))
    img -= img.mean(axis=(2, 3), keepdims=True)
    img /= img.std(axis=(2, 3), keepdims=True) + 1e-8
    img = 0.5 + 0.18 * img
    # A few flat rectangles: the sharp edges a gradient filter reacts to.
    for b in range(batch):
        for _ in range(3):
            y0, x0 = rng.integers(0, height - 8), rng.integers(0, width - 8)
            y1, x1 = y0 + rng.integers(8, height // 3 + 9), x0 + rng.integers(8, width // 3 + 9)
            img[b, :, y0:y1, x0:x1] = rng.uniform(0, 1, size=(3, 1, 1))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def imagenet_normalize(img01: np.ndarray) -> np.ndarray:
    """NCHW RGB in [0, 1] -> ImageNet-normalised float32."""
    return ((img01 - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]).astype(np.float32)
