"""Tests of `geochange info` through click's CliRunner and once as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from helpers import write_geotiff, write_stack

from geochange.cli import cli

DATES = ["2023-01-15", "2023-02-14", "2023-03-16"]


def _stack(tmp_path: Path, **kwargs) -> list[Path]:
    data = np.random.default_rng(0).integers(1, 1000, (3, 3, 64, 80)).astype("uint16")
    return write_stack(tmp_path, data, DATES, band_names=["B02", "B03", "B04"], **kwargs)


def test_info_text(tmp_path: Path) -> None:
    paths = _stack(tmp_path, nodata=0)
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    for date, path in zip(DATES, paths):
        assert f"{date}  {path}" in out
    assert "80 x 64 px, EPSG:32633, pixel 10 x 10" in out
    assert "(500000, 4999360, 500800, 5000000)" in out
    assert "bands:   3 (B02, B03, B04)" in out
    assert "dtype:   uint16" in out and "nodata:  0.0" in out
    assert "0.00512 Mpx x 3 dates = 0.01536 Mpx·dates" in out


def test_info_json_with_dates(tmp_path: Path) -> None:
    paths = _stack(tmp_path, tag_dates=False, name_fmt="img{i}.tif")
    args = ["info", *map(str, paths), "--dates", "2022-05-01,2022-04-01", "--dates", "2022-06-01"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["dates"] == [
        {"date": "2022-04-01", "path": str(paths[1])},
        {"date": "2022-05-01", "path": str(paths[0])},
        {"date": "2022-06-01", "path": str(paths[2])},
    ]
    assert info["grid"]["width"] == 80 and info["grid"]["height"] == 64
    assert info["grid"]["crs"] == "EPSG:32633" and info["grid"]["res"] == [10.0, 10.0]
    assert info["bands"] == {
        "count": 3,
        "names": ["B02", "B03", "B04"],
        "wavelengths_nm": [490.0, 560.0, 665.0],  # Sentinel-2 band names
    }
    assert info["dtype"] == "uint16" and info["nodata"] is None
    assert info["mpx_dates"] == 64 * 80 * 3 / 1e6


def test_info_nan_nodata_json(tmp_path: Path) -> None:
    data = np.ones((2, 1, 8, 8), np.float32)
    write_stack(tmp_path, data, DATES[:2], nodata=np.nan)
    result = CliRunner().invoke(cli, ["info", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["nodata"] == "nan"


def test_info_error_propagates(tmp_path: Path) -> None:
    paths = _stack(tmp_path)
    write_geotiff(tmp_path / "S2_20230401.tif", np.ones((2, 64, 80), np.uint16))
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert result.exit_code != 0
    assert "S2_20230401.tif: has 2 bands, expected 3" in str(result.exception)
    assert str(paths[0]) in str(result.exception)


def test_info_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["info", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "geochange info data_samples/stack" in result.output


def test_info_subprocess_bad_input_exit_2(tmp_path: Path) -> None:
    exe = shutil.which("geochange") or str(Path(sys.executable).parent / "geochange")
    missing = tmp_path / "missing"
    proc = subprocess.run(
        [exe, "info", str(missing)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip() == f"Error: {missing}: no such file or folder; expected a GeoTIFF, "
        "a folder of GeoTIFFs or a glob pattern. Fix: check the path"
    )
