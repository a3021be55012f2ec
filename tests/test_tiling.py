"""Tests of geochange.tiling: chunk arithmetic and seam-free overlap_map."""

from __future__ import annotations

import logging

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geochange.errors import InputError
from geochange.tiling import overlap_map, plan_chunks, region_windows, window_map


def _mean3(img: np.ndarray) -> np.ndarray:
    """One 3x3 mean with zero padding, as a CNN layer with padding=1 does. img: (..., h, w)."""
    pad = [(0, 0)] * (img.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(img, pad)
    h, w = img.shape[-2:]
    out = np.zeros_like(img)
    for dy in range(3):
        for dx in range(3):
            out += p[..., dy : dy + h, dx : dx + w]
    return out / 9.0


def make_fn(radius: int):
    """A block function with receptive radius ``radius``: (t, c, h, w) -> (2, h, w)."""

    def fn(tile: np.ndarray) -> np.ndarray:
        x = tile.astype(np.float64)
        for _ in range(radius):
            x = _mean3(x)
        # Mix dates and bands non-linearly so the test sees every input.
        a = np.tanh(x.sum(axis=(0, 1)))
        b = (x[-1] - x[0]).mean(axis=0) ** 2
        return np.stack([a, b]).astype(np.float32)

    return fn


@pytest.fixture
def scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 2, 100, 130)).astype(np.float32)


# ----------------------------------------------------------------------------- plan_chunks


@given(
    extent=st.integers(1, 3000),
    chunk_size=st.integers(1, 700),
    halo=st.integers(0, 64),
)
def test_plan_chunks_arithmetic(extent: int, chunk_size: int, halo: int) -> None:
    if extent > chunk_size and chunk_size < halo:
        with pytest.raises(InputError, match="smaller than the halo"):
            plan_chunks(extent, extent, chunk_size, halo)
        return
    ys, xs = plan_chunks(extent, 1, chunk_size, halo)
    assert sum(ys) == extent
    assert xs == (1,)
    assert all(c > 0 for c in ys)
    if len(ys) > 1:
        assert min(ys) >= halo
    # Only the last chunk differs from chunk_size, and by less than chunk_size + halo.
    assert all(c == chunk_size for c in ys[:-1])
    assert ys[-1] < chunk_size + max(halo, 1)


def test_plan_chunks_merges_small_last_chunk() -> None:
    assert plan_chunks(100, 130, 32, 5) == ((32, 32, 36), (32, 32, 32, 34))
    assert plan_chunks(100, 130, 32, 4) == ((32, 32, 32, 4), (32, 32, 32, 34))
    assert plan_chunks(100, 130, 32, 1) == ((32, 32, 32, 4), (32, 32, 32, 32, 2))
    assert plan_chunks(10, 10, 32, 50) == ((10,), (10,))


def test_plan_chunks_errors() -> None:
    with pytest.raises(InputError, match=r"chunk_size 8 px is smaller than the halo of 20 px"):
        plan_chunks(100, 100, 8, 20)
    with pytest.raises(InputError, match="chunk_size: got 0"):
        plan_chunks(100, 100, 0, 2)
    with pytest.raises(InputError, match="halo: got -1"):
        plan_chunks(100, 100, 32, -1)


# ----------------------------------------------------------------------------- overlap_map


@pytest.mark.parametrize("tchunk", [1, 3])
def test_overlap_map_seam_free_uneven_chunks(scene: np.ndarray, tchunk: int) -> None:
    r = 4
    fn = make_fn(r)
    whole = fn(scene)
    data = da.from_array(scene, chunks=(tchunk, 2, 32, 32))  # 100 = 32+32+32+4: uneven
    out = overlap_map(data, fn, halo=r, out_bands=2)
    assert out.shape == (2, 100, 130)
    assert out.dtype == np.float32
    # y keeps its 4 px edge chunk (= halo); x merges its 2 px edge chunk.
    assert out.chunks[1:] == ((32, 32, 32, 4), (32, 32, 32, 34))
    got = out.compute(scheduler="threads")
    np.testing.assert_allclose(got, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunk_size", [7, 32, 45, 200])
def test_window_map_equals_whole_scene_and_overlap_map(scene: np.ndarray, chunk_size: int) -> None:
    """Tiles read straight from the reader, even chunks smaller than the halo: still exact."""
    r = 4
    fn = make_fn(r)
    whole = fn(scene)
    ych = tuple(min(chunk_size, 100 - y) for y in range(0, 100, chunk_size))
    xch = tuple(min(chunk_size, 130 - x) for x in range(0, 130, chunk_size))
    calls = []

    def counted(tile: np.ndarray) -> np.ndarray:
        calls.append(tile.shape)
        return fn(tile)

    out = window_map(scene, (ych, xch), counted, halo=r, out_bands=2, name="wm")
    assert out.chunks[1:] == (ych, xch) and out.name.startswith("wm-")
    got = out.compute(scheduler="threads")
    np.testing.assert_allclose(got, whole, atol=1e-6, rtol=0)
    assert len(calls) == len(ych) * len(xch)  # one task per chunk, nothing else
    # The graph holds only the model tasks: no input chunks, no overlap exchange.
    assert len(dict(out.__dask_graph__())) == len(ych) * len(xch)
    if chunk_size >= r:
        data = da.from_array(scene, chunks=(1, 2, ych, xch))
        ref = overlap_map(data, fn, halo=r, out_bands=2).compute(scheduler="sync")
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_window_map_keeps_chunks_and_loads_them_instead_of_computing(scene, tmp_path) -> None:
    from geochange.io.resume import ChunkStore

    fn = make_fn(2)
    calls = []

    def counted(tile: np.ndarray) -> np.ndarray:
        calls.append(tile.shape)
        return fn(tile)

    chunks = plan_chunks(100, 130, 32, 2)
    n = len(chunks[0]) * len(chunks[1])
    store = ChunkStore(tmp_path, n)
    first = window_map(scene, chunks, counted, halo=2, out_bands=2, store=store)
    first = first.compute(scheduler="threads")
    assert len(calls) == n and store.count() == n
    lost = sorted(tmp_path.glob("*.npy"))[::3]
    for path in lost:
        path.unlink()
    damaged = sorted(tmp_path.glob("*.npy"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short: computed again
    calls.clear()
    again = window_map(scene, chunks, counted, halo=2, out_bands=2, store=store)
    assert len(calls) == 0  # building the graph computes nothing
    np.testing.assert_array_equal(again.compute(scheduler="threads"), first)
    assert len(calls) == len(lost) + 1
    assert store.count() == n and not list(tmp_path.glob("*.tmp"))


def test_window_map_checks_shapes(scene: np.ndarray) -> None:
    with pytest.raises(ValueError, match="reader is"):
        window_map(scene, ((50,), (130,)), make_fn(1), halo=1, out_bands=2)
    bad = window_map(scene, ((100,), (130,)), lambda t: t[0, :1], halo=1, out_bands=2)
    with pytest.raises(ValueError, match="block function returned shape"):
        bad.compute(scheduler="sync")


def test_overlap_map_chunk_size_does_not_matter(scene: np.ndarray) -> None:
    r = 3
    fn = make_fn(r)
    outs = []
    for cs in (17, 40, 64, 200):
        ych, xch = plan_chunks(100, 130, cs, r)
        data = da.from_array(scene, chunks=(1, 2, ych, xch))
        outs.append(overlap_map(data, fn, halo=r, out_bands=2).compute(scheduler="sync"))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-6, rtol=0)


def test_overlap_map_too_small_halo_shows_seams(scene: np.ndarray) -> None:
    r = 4
    fn = make_fn(r)
    whole = fn(scene)
    data = da.from_array(scene, chunks=(1, 2, 32, 32))
    got = overlap_map(data, fn, halo=r - 1, out_bands=2).compute(scheduler="sync")
    diff = np.abs(got - whole).max(axis=0)
    assert diff.max() > 1e-4
    # The differences sit next to the internal chunk borders, not in chunk interiors.
    assert diff[40:56, 40:56].max() < 1e-6


def test_overlap_map_merges_chunks_smaller_than_halo(scene: np.ndarray, caplog) -> None:
    r = 5
    fn = make_fn(r)
    data = da.from_array(scene, chunks=(1, 2, (3, 50, 47), (60, 2, 66, 2)))
    with caplog.at_level(logging.INFO, logger="geochange.tiling"):
        out = overlap_map(data, fn, halo=r, out_bands=2)
    assert out.chunks[1:] == ((53, 47), (60, 70))
    assert "merged small chunks" in caplog.text
    np.testing.assert_allclose(out.compute(scheduler="sync"), fn(scene), atol=1e-6, rtol=0)


def test_overlap_map_halo_larger_than_scene() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(size=(2, 1, 9, 12)).astype(np.float32)
    fn = make_fn(2)
    out = overlap_map(da.from_array(small, chunks=(1, 1, 9, 12)), fn, halo=40, out_bands=2)
    np.testing.assert_allclose(out.compute(), fn(small), atol=1e-6)


def test_overlap_map_calls_fn_once_per_chunk_with_tiles(scene: np.ndarray) -> None:
    shapes: list[tuple[int, ...]] = []

    def fn(tile: np.ndarray) -> np.ndarray:
        shapes.append(tile.shape)
        return np.zeros((1,) + tile.shape[2:], np.float32)

    data = da.from_array(scene, chunks=(1, 2, 50, 65))
    out = overlap_map(data, fn, halo=2, out_bands=1, dtype=np.uint8)
    assert out.dtype == np.uint8
    with dask.config.set(scheduler="sync"):
        out.compute()
    assert sorted(shapes) == sorted([(3, 2, 52, 67)] * 4)


def test_overlap_map_wrong_output_shape(scene: np.ndarray) -> None:
    data = da.from_array(scene, chunks=(1, 2, 50, 65))
    out = overlap_map(data, lambda t: np.zeros((1, 3, 3), np.float32), halo=1, out_bands=2)
    with pytest.raises(ValueError, match=r"expected \(out_bands=2"):
        out.compute(scheduler="sync")


def test_tiling_does_not_import_torch_or_rasterio() -> None:
    import ast

    import geochange.tiling

    tree = ast.parse(open(geochange.tiling.__file__, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"torch", "rasterio"}


def test_overlap_map_task_name_prefix(scene: np.ndarray) -> None:
    data = da.from_array(scene, chunks=(1, 2, 50, 65))
    out = overlap_map(data, make_fn(1), halo=1, out_bands=2, name="geochange-detect")
    assert out.name.startswith("geochange-detect-")
    again = overlap_map(data, make_fn(1), halo=1, out_bands=2)
    assert again.name.startswith("overlap_map-")


@pytest.mark.parametrize(
    ("h", "w", "core", "halo"), [(50, 37, 16, 5), (8, 8, 16, 3), (33, 1, 8, 0)]
)
def test_windows_write_every_pixel_once_from_its_own_window(h, w, core, halo):
    from geochange.tiling import windows

    a = np.arange(h * w, dtype=np.float32).reshape(h, w)
    out = np.full_like(a, -1)
    hits = np.zeros((h, w), int)
    for read, crop, write in windows(h, w, core, halo):
        win = a[read]
        assert all(s.stop - s.start <= core + 2 * halo for s in read)
        out[write] = win[crop]
        hits[write] += 1
    np.testing.assert_array_equal(out, a)
    assert (hits == 1).all()


def test_stitched_windows_give_the_whole_result_for_every_output():
    from scipy import ndimage

    from geochange.tiling import stitched

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 41, 29)).astype(np.float32)
    mask = rng.random((41, 29)) > 0.3

    def fn(xw, mw):  # reaches 2 px: a 5x5 box mean, and a per-pixel output of another dtype
        return ndimage.uniform_filter(xw, size=(1, 5, 5), mode="nearest"), mw & (xw[0] > 0)

    whole = fn(x, mask)
    parts = stitched(fn, (x, mask), core=8, halo=2)
    assert [p.dtype for p in parts] == [w.dtype for w in whole]
    for p, w in zip(parts, whole):
        np.testing.assert_array_equal(p, w)
    # Asked for a region only (cut along a core inside it): the same values there, 0 elsewhere.
    region, core = (5, 30, 3, 20), (7, 28, 5, 18)
    inside = (slice(5, 30), slice(3, 20))
    for along in (None, core):
        parts = stitched(fn, (x, mask), core=8, halo=2, region=region, along=along)
        for p, w in zip(parts, whole):
            np.testing.assert_array_equal(p[(..., *inside)], w[(..., *inside)])
            rest = np.ones(p.shape[-2:], bool)
            rest[inside] = False
            assert not p[..., rest].any()


@given(
    st.integers(1, 300), st.integers(1, 300), st.integers(16, 128), st.integers(0, 40),
    st.data(),
)  # fmt: skip
def test_region_windows_cover_the_region_once_in_even_cores(h, w, size, halo, data) -> None:
    y0 = data.draw(st.integers(0, h - 1))
    y1 = data.draw(st.integers(y0 + 1, h))
    x0 = data.draw(st.integers(0, w - 1))
    x1 = data.draw(st.integers(x0 + 1, w))
    seen = np.zeros((h, w), int)
    rows_cores, cols_cores = set(), set()
    for (rows, cols), (cr, cc), (wr, wc) in region_windows(h, w, (y0, y1, x0, x1), size, halo):
        seen[wr, wc] += 1
        assert wr.stop - wr.start <= size and wc.stop - wc.start <= size
        rows_cores.add(wr.stop - wr.start)
        cols_cores.add(wc.stop - wc.start)
        # The read carries the halo, clipped at the tile's edge; the crop is the core in it.
        assert rows.start == max(0, wr.start - halo) and rows.stop == min(h, wr.stop + halo)
        assert cols.start == max(0, wc.start - halo) and cols.stop == min(w, wc.stop + halo)
        assert (cr.start + rows.start, cr.stop + rows.start) == (wr.start, wr.stop)
        assert (cc.start + cols.start, cc.stop + cols.start) == (wc.start, wc.stop)
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    assert (seen[inside] == 1).all() and (seen[~inside] == 0).all()
    # Even cores: no thin last one.
    assert max(rows_cores) - min(rows_cores) <= 1 and max(cols_cores) - min(cols_cores) <= 1


@given(
    st.integers(16, 300), st.integers(16, 128), st.integers(0, 40), st.integers(0, 6),
    st.data(),
)  # fmt: skip
def test_region_windows_along_a_core_keep_its_split(n, size, halo, margin, data) -> None:
    """Cut along a chunk's core, a region of that core and a margin around it has as many
    sub-tiles as the core alone (not one more row and column for the margin); together they
    cover the region once."""
    h = w = n + 2 * margin + data.draw(st.integers(0, 20))
    y0 = data.draw(st.integers(margin, h - n - margin))
    x0 = data.draw(st.integers(margin, w - n - margin))
    core = (y0, y0 + n, x0, x0 + n)
    region = (y0 - margin, y0 + n + margin, x0 - margin, x0 + n + margin)
    wins = region_windows(h, w, region, size, halo, along=core)
    assert len(wins) == len(region_windows(h, w, core, size, halo))
    seen = np.zeros((h, w), int)
    for (rows, _), (cr, _), (wr, wc) in wins:
        seen[wr, wc] += 1
        assert wr.stop - wr.start <= size + 2 * margin and wc.stop - wc.start <= size + 2 * margin
        assert rows.start == max(0, wr.start - halo) and rows.stop == min(h, wr.stop + halo)
        assert (cr.start + rows.start, cr.stop + rows.start) == (wr.start, wr.stop)
    inside = np.zeros((h, w), bool)
    inside[region[0] : region[1], region[2] : region[3]] = True
    assert (seen[inside] == 1).all() and (seen[~inside] == 0).all()
