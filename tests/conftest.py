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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small untrained band-agnostic CNN-LSTM checkpoint (fast, deterministic weights)."""
    import torch

    from geochange.model import CNNLSTM, save_model

    torch.manual_seed(0)
    net = CNNLSTM(in_bands=None, features=4, hidden=4, head_hidden=4)
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    save_model(net, path, {"name": "tiny-test", "trained_on": "nothing"})
    return path
