"""Band centre wavelengths: read from real GeoTIFF tags and descriptions, and told to the model."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import torch
from helpers import write_geotiff, write_stack

from geochange.bands import band_wavelengths, parse_wavelengths, wavelength_from_name
from geochange.cli import main
from geochange.errors import InputError
from geochange.io.stack import open_stack
from geochange.model import CNNLSTM, load_model, save_model
from geochange.model.cnn_lstm import encode_wavelengths
from geochange.pipeline import detect
from geochange.stages.network import model_detector

DATES = ["2023-01-15", "2023-03-16", "2023-05-15"]


def _data(c: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 5000, (3, c, 40, 48)).astype("uint16")


@pytest.mark.parametrize(
    "name, nm",
    [
        ("B04 665 nm", 665.0),
        ("NIR 842nm", 842.0),
        ("swir 1.61 um", 1610.0),
        ("B8A", 865.0),
        ("b02", 490.0),
        ("SR_B5", 865.0),  # Landsat 8/9 Collection 2: NIR
        ("red", 665.0),
        ("rededge1", 705.0),  # Earth Search's Sentinel-2 asset keys
        ("rededge3", 783.0),
        ("nir09", 945.0),
        ("swir16", 1610.0),
        ("nir band", 842.0),
        ("B4", None),  # Landsat 5/7 NIR or Sentinel-2 red: ambiguous, left unknown
        ("band 1", None),
        ("", None),
        (None, None),
        ("35 nm", None),  # out of any plausible range: not a band centre
    ],
)
def test_wavelength_from_name(name, nm) -> None:
    assert wavelength_from_name(name) == nm


def test_tag_wins_over_descriptions_and_bad_values_are_named() -> None:
    tags = {"WAVELENGTHS_NM": "490,,665"}
    assert band_wavelengths(tags, ["B08", "B03", None]) == (490.0, None, 665.0)
    assert band_wavelengths({}, ["B08", "B03", None]) == (842.0, 560.0, None)
    with pytest.raises(InputError, match=r"a\.tif: tag WAVELENGTHS_NM: found 2 wavelength"):
        band_wavelengths({"WAVELENGTHS_NM": "490,560"}, [None] * 3, "a.tif")
    with pytest.raises(InputError, match=r"--wavelengths: found 0\.665 nm.*nanometres"):
        parse_wavelengths("490,560,0.665", 3)
    with pytest.raises(InputError, match=r"--wavelengths: found 'red'"):
        parse_wavelengths("490,560,red", 3)
    assert parse_wavelengths([490, None, float("nan")], 3) == (490.0, None, None)


def test_open_stack_reads_and_overrides_wavelengths(tmp_path) -> None:
    d = tmp_path / "s"
    write_stack(d, _data(), DATES, band_names=["B02", "B03", "B04", "B08"])
    assert open_stack(d).wavelengths == (490.0, 560.0, 665.0, 842.0)
    assert open_stack(d, wavelengths="480,,660,").wavelengths == (480.0, None, 660.0, None)
    with pytest.raises(InputError, match="--wavelengths: found 3 wavelength.*expected 4"):
        open_stack(d, wavelengths="480,560,660")
    u = tmp_path / "u"
    write_stack(u, _data(), DATES)
    assert open_stack(u).wavelengths == (None, None, None, None)


def test_a_bad_wavelength_tag_is_a_one_line_error_naming_the_file(tmp_path, capsys) -> None:
    d = tmp_path / "s"
    write_stack(d, _data()[:2], DATES[:2])
    write_geotiff(
        d / "S2_20230515.tif",
        _data()[2],
        tags={"ACQUISITION_DATE": DATES[2], "WAVELENGTHS_NM": "1,2"},
    )
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(d), "-o", str(out / "c.gpkg"), "--method", "cva"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "S2_20230515.tif: tag WAVELENGTHS_NM: found 2 wavelength(s), expected 4" in err
    assert not out.exists()


def test_encoding_is_smooth_and_unknown_is_one_code() -> None:
    codes = encode_wavelengths(torch.tensor([[490.0, 500.0, 842.0, float("nan")]]))[0]
    assert codes.shape == (4, 12)
    assert torch.equal(codes[3], torch.zeros(12))  # unknown: known flag 0, basis 0
    assert (codes[:3, 0] == 1).all()
    near, far = (codes[0, 1:] - codes[1, 1:]).norm(), (codes[0, 1:] - codes[2, 1:]).norm()
    assert near < 0.3 * far  # 490 vs 500 nm look alike, blue vs NIR do not


def _wl_net() -> CNNLSTM:
    torch.manual_seed(0)
    net = CNNLSTM(features=4, hidden=4, head_hidden=4, wavelengths=True)
    with torch.no_grad():  # as if trained: the modulation is no longer the identity
        net.stem.film.weight.normal_(0, 1.0)
        net.stem.film.bias.normal_(0, 0.3)
    return net.eval()


def test_the_model_uses_wavelengths_and_stays_band_order_invariant() -> None:
    net = _wl_net()
    x = torch.randn(2, 3, 4, 20, 20)
    v = torch.ones(2, 3, 20, 20, dtype=torch.bool)
    wl = torch.tensor([[490.0, 560.0, 665.0, 842.0]] * 2)
    with torch.no_grad():
        told = net(x, v, wl)[0]
        swapped = net(x, v, wl[:, [3, 1, 2, 0]])[0]  # NIR called blue and blue called NIR
        perm = [2, 0, 3, 1]
        reordered = net(x[:, :, perm], v, wl[:, perm])[0]
        unknown = net(x, v)[0]
        nan = net(x, v, torch.full((2, 4), float("nan")))[0]
    assert (told - swapped).abs().max() > 1e-3
    torch.testing.assert_close(reordered, told, rtol=0, atol=1e-5)
    torch.testing.assert_close(unknown, nan, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"wavelengths: got shape \(2, 3\), expected \(2, 4\)"):
        net(x, v, wl[:, :3])


def test_a_fresh_wavelength_stem_starts_as_the_plain_one_and_old_checkpoints_load(tmp_path) -> None:
    torch.manual_seed(0)
    new = CNNLSTM(features=4, hidden=4, head_hidden=4, wavelengths=True).eval()
    old = CNNLSTM(features=4, hidden=4, head_hidden=4).eval()
    old.load_state_dict({k: v for k, v in new.state_dict().items() if "film" not in k})
    x, v = torch.randn(1, 2, 3, 16, 16), torch.ones(1, 2, 16, 16, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(
            new(x, v, torch.tensor([[490.0, 665.0, 842.0]]))[0], old(x, v)[0]
        )
    path = save_model(old, tmp_path / "old.ckpt")
    obj = torch.load(path, weights_only=True)
    del obj["config"]["wavelengths"]  # a checkpoint written before the option existed
    torch.save(obj, path)
    assert load_model(path)[0].uses_wavelengths is False


def test_detect_tells_the_model_the_stack_wavelengths(tmp_path) -> None:
    path = save_model(_wl_net(), tmp_path / "wl.ckpt", {"name": "wl-test"})
    d = tmp_path / "s"
    data = _data()
    write_stack(d, data, DATES, band_names=["B02", "B03", "B04", "B08"])
    stack = open_stack(d)
    sample = data.astype(np.float32).reshape(3, 4, -1)
    det = model_detector(sample, model_path=path, device="cpu", wavelengths=stack.wavelengths)
    np.testing.assert_array_equal(det.wavelengths, [490, 560, 665, 842])
    told = det(data.astype(np.float32))[0]
    blind = model_detector(sample, model_path=path, device="cpu")(data.astype(np.float32))[0]
    assert np.abs(told - blind).max() > 1e-4

    res = detect(
        d, tmp_path / "out" / "c.gpkg", model=path, quicklook=False, progress=False, skip=["refine"]
    )
    written = res.prob.compute()  # kept in steps of 1/254 (half a step from the block's value)
    np.testing.assert_allclose(written, told, atol=0.5 / 254 + 1e-6)
    runs = gpd.read_file(tmp_path / "out" / "c.gpkg", layer="runs")
    assert runs["wavelengths_nm"][0] == "[490.0, 560.0, 665.0, 842.0]"
    res = detect(
        d, None, model=path, wavelengths="842,560,665,490", quicklook=False, progress=False
    )
    assert np.abs(res.prob.compute() - written).max() >= 1 / 254  # the override reaches the model


def test_adapt_trains_the_wavelength_code_and_records_the_wavelengths(tmp_path) -> None:
    from geochange.model.adapt import adapt

    torch.manual_seed(0)
    base = save_model(
        CNNLSTM(features=4, hidden=4, head_hidden=4, wavelengths=True), tmp_path / "b.ckpt"
    )
    d = tmp_path / "s"
    write_stack(d, _data(), DATES)  # untagged: the wavelengths come from the argument
    ckpt = adapt(
        d, tmp_path / "a.ckpt", model=base, wavelengths="490,560,665,842", alpha=1.0,
        max_steps=3, chip=32, device="cpu",
        keep_confident=None,  # an untrained base "detects" at random: teach every real pixel
    )  # fmt: skip
    net, meta = load_model(ckpt)
    assert meta["adapted_on"]["wavelengths_nm"] == [490.0, 560.0, 665.0, 842.0]
    assert net.stem.film.weight.abs().sum() > 0  # the zero-initialised code was trained
