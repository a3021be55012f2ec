"""Shared fixtures: small real GeoTIFF stacks written with rasterio in tmp_path."""

from __future__ import annotations

import os

import pytest

# Keep tests within 2 cores and deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is an install error elsewhere
        cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
