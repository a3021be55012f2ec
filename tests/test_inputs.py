"""Varied inputs: list files, folders of VRTs (only when allowed), globs inside archives and
object stores through GDAL, and honest lines for unreachable remote paths."""

from __future__ import annotations

import re
import zipfile

import numpy as np
import pytest
from helpers import run_cli, write_stack

from geochange.errors import InputError
from geochange.io.inputs import expand_inputs
from geochange.io.stack import open_stack

DATES = ["2022-03-01", "2022-05-17", "2022-08-02"]


def _scene(t=3, c=3, h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(100, 3000, size=(t, c, h, w)).astype(np.uint16)


@pytest.fixture
def stack(tmp_path):
    paths = write_stack(tmp_path / "stack", _scene(), DATES)
    return tmp_path / "stack", paths


def _vrt(path, source, width=20, height=24, bands=3):
    """A VRT reading every band of a GeoTIFF beside it (SimpleSource, relative path)."""
    body = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{source}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in range(1, bands + 1)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>500000, 10, 0, 4600000, 0, -10</GeoTransform>{body}</VRTDataset>"
    )


def test_a_list_file_names_the_inputs_relative_to_itself(stack, tmp_path):
    folder, paths = stack
    listing = folder / "list.txt"
    listing.write_text(
        f"# the scenes\n{paths[2].name}\n\n{paths[0].name}\n  {paths[1]}  \n"
    )  # relative, blank, absolute
    assert expand_inputs(f"@{listing}") == [str(paths[2]), str(paths[0]), str(paths[1])]
    s = open_stack(f"@{listing}")
    assert [d.isoformat() for d in s.dates] == DATES


def test_a_list_file_with_a_missing_path_names_it(stack, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("stack/S2_20220301.tif\nstack/nope.tif\n")
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "stack" / "nope.tif"))):
        open_stack(f"@{listing}")
    with pytest.raises(InputError, match=r"@.*missing\.txt: cannot read the list file"):
        open_stack(f"@{tmp_path / 'missing.txt'}")


def test_a_folder_of_vrts_needs_allow_driver(stack, tmp_path):
    folder, paths = stack
    vrts = tmp_path / "vrts"
    vrts.mkdir()
    for p in paths:
        _vrt(vrts / p.with_suffix(".vrt").name, f"../stack/{p.name}")
    code, _, err = run_cli("detect", vrts, "-o", tmp_path / "o" / "c.gpkg", "--method", "cva")
    assert code == 2
    assert "folder has 3 .vrt file(s) and no GeoTIFF" in err and "--allow-driver VRT" in err
    assert len(err.strip().splitlines()) == 1
    s = open_stack(vrts, allow_driver="VRT")
    assert [d.isoformat() for d in s.dates] == DATES  # dates from the VRTs' names
    np.testing.assert_array_equal(s.data.compute(), open_stack(folder).data.compute())


def test_a_glob_inside_a_zip_is_expanded_by_gdal(stack, tmp_path):
    folder, paths = stack
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in paths:
            z.write(p, f"tiles/{p.name}")
        z.writestr("tiles/readme.txt", "not an image")
    found = expand_inputs(f"/vsizip/{archive}/tiles/S2_*.tif")
    assert found == [f"/vsizip/{archive}/tiles/{p.name}" for p in paths]
    assert expand_inputs(f"/vsizip/{archive}/tiles/") == found  # a GDAL folder
    s = open_stack(f"/vsizip/{archive}/tiles/*.tif")
    np.testing.assert_array_equal(s.data.compute(), open_stack(folder).data.compute())
    with pytest.raises(InputError, match=r"glob pattern matches no file under /vsizip/"):
        expand_inputs(f"/vsizip/{archive}/tiles/L8_*.tif")
    with pytest.raises(InputError, match=r"missing\.zip/tiles: no such folder or archive"):
        expand_inputs(f"/vsizip/{tmp_path / 'missing.zip'}/tiles/*.tif")


@pytest.fixture
def closed_s3(monkeypatch):
    """An S3 endpoint on a closed local port: every request fails at once, offline."""
    for key, value in {
        "AWS_S3_ENDPOINT": "127.0.0.1:9",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_NO_SIGN_REQUEST": "YES",
        "GDAL_HTTP_MAX_RETRY": "0",
        "CPL_VSIL_CURL_NON_CACHED": "/vsis3/",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("s3://bucket/tiles/*.tif", r"^Error: /vsis3/bucket/tiles: cannot list it: CURL error"),
        ("s3://bucket/tiles/a_20220301.tif", r"^Error: s3://bucket/tiles/a_20220301\.tif: "
         r"cannot reach it: CURL error"),
    ],
)  # fmt: skip
def test_an_unreachable_object_store_is_one_honest_line(closed_s3, tmp_path, item, match):
    code, _, err = run_cli("detect", item, "s3://bucket/b_20220401.tif", "-o", tmp_path / "c.gpkg")
    assert code == 2
    assert re.search(match, err) and "AWS_NO_SIGN_REQUEST=YES" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.gpkg").exists()


def _one_file(path, data, descriptions=None):
    """(t, c, h, w) as one GeoTIFF with t*c bands, date after date."""
    from helpers import write_geotiff

    t, c = data.shape[:2]
    return write_geotiff(path, data.reshape(t * c, *data.shape[2:]), band_names=descriptions)


def test_one_file_with_a_band_per_date_is_the_same_stack(stack, tmp_path):
    folder, _ = stack
    data = _scene()
    whole = _one_file(tmp_path / "series.tif", data)
    s = open_stack(whole, layout="band-per-date", dates=",".join(DATES))
    files = open_stack(folder)
    assert s.T == 3 and s.band_count == 3 and s.bands == ((1, 2, 3), (4, 5, 6), (7, 8, 9))
    np.testing.assert_array_equal(s.data.compute(), files.data.compute())
    from geochange.io.read import read_sample

    np.testing.assert_array_equal(read_sample(s), read_sample(files))
    # dates from the band descriptions; dates given out of order are sorted with their bands
    names = [f"b{b}_{d.replace('-', '')}" for d in DATES for b in (1, 2, 3)]
    named = _one_file(tmp_path / "named.tif", data, names)
    assert open_stack(named, layout="band-per-date").dates == files.dates
    back = open_stack(whole, layout="band-per-date", dates=list(reversed(DATES)))
    np.testing.assert_array_equal(back.data.compute(), files.data.compute()[::-1])


def test_band_per_date_through_the_cli_gives_the_files_polygons(stack, tmp_path):
    import geopandas as gpd

    folder, _ = stack
    whole = _one_file(tmp_path / "series.tif", _scene())
    common = ["--method", "cva", "--no-progress", "--no-quicklook", "--chunk-size", "32"]
    code, _, err = run_cli("detect", folder, "-o", tmp_path / "a.gpkg", *common)
    assert code == 0, err
    code, _, err = run_cli(
        "detect", whole, "--layout", "band-per-date", "--dates", ",".join(DATES),
        "-o", tmp_path / "b.gpkg", *common,
    )  # fmt: skip
    assert code == 0, err
    a, b = (gpd.read_file(tmp_path / f"{n}.gpkg", layer="changes") for n in "ab")
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--dates", "2022-03-01,2022-05-17"], r"--dates: got 2 dates for .*series\.tif, which "
         r"has 9 bands; expected dates x bands per date"),
        ([], r"series\.tif: band 1 of 9 has no date in its description"),
        (["--dates", "2022-03-01,2022-05-17,2022-08-02", "--bands-per-date", "2"],
         r"--dates: got 3 dates .* has 9 bands and --bands-per-date 2"),
    ],
)  # fmt: skip
def test_band_per_date_mistakes_are_one_line(tmp_path, args, match):
    whole = _one_file(tmp_path / "series.tif", _scene())
    code, _, err = run_cli(
        "detect", whole, "--layout", "band-per-date", *args, "-o", tmp_path / "c.gpkg"
    )
    assert code == 2 and re.search(match, err) and len(err.strip().splitlines()) == 1, err


def test_a_vrt_on_a_virtual_path_is_refused_even_when_vrts_are_allowed(stack, tmp_path):
    """Its XML cannot be checked for raw bands before GDAL reads it."""
    folder, paths = stack
    _vrt(tmp_path / "a.vrt", str(paths[0]))
    _vrt(tmp_path / "b.vrt", str(paths[1]))
    archive = tmp_path / "v.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tmp_path / "a.vrt", "a_20220301.vrt")
    with pytest.raises(InputError, match=r"a GDAL VRT on a virtual or remote path"):
        open_stack([f"/vsizip/{archive}/a_20220301.vrt", paths[1]], allow_driver="VRT")
    # the same VRT as a local file is read
    local = open_stack(
        [tmp_path / "a.vrt", tmp_path / "b.vrt"], allow_driver="VRT", dates=DATES[:2]
    )
    assert local.T == 2
