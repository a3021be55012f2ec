"""The ``cnn-lstm`` detector stage: a checkpoint as a numpy block function for seam-free tiling.

:class:`ModelDetector` wraps a CNN-LSTM and the scene statistics computed ONCE from a decimated
sample of the stack; called on a tile (t, c, h, w) it returns the change probability and the
most likely interval, (2, h, w). It is picklable for dask.distributed: a detector built from a
checkpoint path pickles only the path, the statistics and options, and every process loads the
network once (module-level cache keyed by path and device).

**The last-date check.** With three or more dates the network judges a change seen on the last
date alone less surely than the same two looks given as a pair: trained on synthetic series in
which one-date transients (clouds, haze) on the last date outnumber changes first seen there
more and more as the series grows, it learnt that a lone last-date anomaly is rarely change.
So the detector also runs the network on a pair: a reference of the dates before the last (per
pixel the median of its last :data:`LAST_REFERENCE_DATES` valid looks before the last date, or
its last valid look where it has fewer) and the last date. Where the evidence is on the last
date alone (it departs from the reference :data:`STABLE_RATIO` times as far as the pixel ever
moved from one date to the next before it), the pair's change probability, counted only on the
share of the pixel's probability that the series does not give to an earlier date, raises the
series' probability of a change on the last date; it never lowers anything: where the history
is stable, more dates never make a last-date change less likely than a pair would. Where the pair decides, the change
date is the last date (``later_dates`` 0 in the polygons: a later date should confirm it).

**The check around the change.** The network learned series of 2-10 dates. Over many more dates
its recurrent states drift for some stable ground: a bare-soil patch of a synthetic 96-date
series that every 10- or 20-date part of the series calls stable (probability 0.01-0.03) gets
0.87 from the whole series. So in a series longer than 2 x :data:`AROUND_DATES` dates the
network also judges each pixel on the dates around its change alone (the :data:`AROUND_DATES`
dates before the date the change is first seen and as many from it on; the other dates invalid,
so they neither show a change nor carry a state), and the pixel's probability is the lower of
the two: a change must be seen in the series the network knows how to read. The last-date check
then works on that probability as before. Up to 2 x :data:`AROUND_DATES` dates nothing changes;
longer series cost one more pass of the network.

**The events after the first.** The network learned series with one change, so one pass gives
each pixel one event: its most likely date. With ``next_events`` > 0 (a long series run whole
when the run shows more than the first event, see :mod:`geochange.stages.windows`) the detector
then judges each pixel's series again *from
that date on*, as its own series (the earlier dates invalid and showing the look of that date, so
they neither create a change nor carry the old state), and that pass's change is the next event;
and so on. A forest cut and regrown, or a field built on two years later, is then two events,
each judged with all the dates around it. Each pass costs one more pass of the network.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from geochange.bands import wavelength_array
from geochange.errors import ModelError
from geochange.model import DEFAULT_MODEL_PATH, load_model
from geochange.model.checkpoint import calibration_of
from geochange.model.cnn_lstm import CNNLSTM
from geochange.model.normalize import apply_tensor
from geochange.robust import scene_stats
from geochange.stages import Block, Context, Reach
from geochange.tiling import Window, region_windows, windows

__all__ = [
    "AROUND_DATES",
    "LAST_REFERENCE_DATES",
    "STABLE_RATIO",
    "Device",
    "ModelDetector",
    "combine_last_date",
    "fit",
    "last_date_only",
    "last_date_reference",
    "model_detector",
    "resolve_device",
]

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]

#: Dates before the last whose per-pixel median is the last-date check's reference: three, so
#: a cloud on one of them is outvoted and a change two or more dates before the last is in the
#: reference already (its series date stands).
LAST_REFERENCE_DATES = 3
#: The check around the change (module notes) judges a pixel on this many dates before the date
#: its change is first seen and as many from it on; it runs on series longer than twice this.
AROUND_DATES = 10
#: The last-date check counts only where the last date departs from the reference at least this
#: many times as far as the largest step between consecutive looks before it (band-mean absolute
#: difference of the normalised bands): the evidence is on the last date alone. A pixel whose
#: history moves as much (a crop field through its season, a haze-prone slope) is left to the
#: series, which has seen it move. At 2 a crop harvested on the last date of held-out synthetic
#: scenes passed; real repeats of one state move far less (benchmarks/SERIES_REAL.md).
STABLE_RATIO = 4.0

# (source key, device) -> (net, meta); one network per process and device.
_NETS: dict[tuple[str, str], tuple[CNNLSTM, dict]] = {}
_LOCK = threading.Lock()


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" when available, else "cpu"; "cuda" without CUDA is a ModelError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"device: got {device!r} but torch sees no CUDA GPU; use --device cpu or auto"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelError(f"device: got {device!r}, expected 'auto', 'cpu' or 'cuda'")
    return device


def _cached_net(path: str | None, device: str) -> tuple[CNNLSTM, dict]:
    key = (str(Path(path or DEFAULT_MODEL_PATH).resolve()), device)
    with _LOCK:
        if key not in _NETS:
            _NETS[key] = load_model(path, map_location=device)
        return _NETS[key]


def _state_bytes(net: CNNLSTM) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"config": net.config(), "state_dict": state}, buf)
    return buf.getvalue()


def _net_from_bytes(blob: bytes, device: str) -> CNNLSTM:
    key = ("sha256:" + hashlib.sha256(blob).hexdigest(), device)
    with _LOCK:
        if key not in _NETS:
            obj = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
            net = CNNLSTM(**obj["config"])
            net.load_state_dict(obj["state_dict"])
            _NETS[key] = (net.to(device).eval(), {})
        return _NETS[key][0]


class ModelDetector:
    """Block function ``tile (t, c, h, w) float32 NaN-nodata -> (2, h, w) float32``.

    Output band 0: change probability in [0, 1] (NaN where fewer than two dates are valid);
    band 1: most likely interval k in 0..t-2 (change first seen on date k+1) as float, NaN where
    band 0 is NaN.

    Args:
        net: the network (put in eval mode), or None with ``model_path`` to load it lazily.
        stats: (t, c, 2) scene statistics from :func:`geochange.robust.scene_stats`.
        device: "cpu", "cuda" or "auto".
        batch_size: sub-tiles of one shape per forward pass. One on the CPU: a batch of
            four took 1.4-2.0x as long there and peaked 1-1.8 GiB higher
            (benchmarks/MEMORY_PLAN.md); a GPU run plans its own (:mod:`geochange.plan`).
        tile_size: tiles larger than this (pixels, core without halo) run as sub-tiles with a
            halo of ``self.halo``, which bounds memory and gives exactly the same output.
        amp: autocast to float16 on CUDA (faster, not bit-identical to float32).
        pin_memory: on CUDA, send each tile from page-locked host memory without waiting for
            the copy (the CPU goes on meanwhile); ignored on the CPU.
        model_path: checkpoint the net came from (None with ``net`` = not from a file); when
            set, pickling sends the path, not the weights.
        meta: model description (name, version, ...), for provenance.
        num_threads: torch intra-op threads used in ``__call__`` (None = leave as is).
        wavelengths: band centres in nm, one per band (None items or NaN = unknown), told to
            a model that uses them (see ``Stack.wavelengths``); None = all unknown.
        last_date_check: with 3+ dates, also run the network on (reference of the dates
            before the last, last date) and let it raise a last-date change (module notes).
        around_check: in a series longer than 2 x :data:`AROUND_DATES` dates, also judge each
            pixel on the dates around its change alone and keep the lower probability (module
            notes).
        next_events: further events to look for after each pixel's first (module notes): the
            block then also carries their probabilities and date indices
            (:attr:`~geochange.stages.Block.next_events`). 0 = none.
        next_from: a pixel's next event is looked for where its previous one reaches this
            probability (the run's threshold; elsewhere the next event is judged on the dates
            from the earliest such event on).
    """

    def __init__(
        self,
        net: CNNLSTM | None,
        stats: np.ndarray,
        device: str = "cpu",
        batch_size: int = 1,
        tile_size: int = 256,
        amp: bool = False,
        model_path: str | os.PathLike | None = None,
        meta: dict | None = None,
        num_threads: int | None = None,
        wavelengths: Sequence[float | None] | None = None,
        last_date_check: bool = True,
        next_events: int = 0,
        next_from: float = 0.5,
        around_check: bool = True,
        pin_memory: bool = True,
    ) -> None:
        self.last_date_check = bool(last_date_check)
        self.around_check = bool(around_check)
        self.next_events = int(next_events)
        self.next_from = float(next_from)
        self.stats = np.asarray(stats, dtype=np.float32)
        if self.stats.ndim != 3 or self.stats.shape[2] != 2:
            raise ValueError(f"stats: got shape {self.stats.shape}, expected (t, c, 2)")
        self.device = resolve_device(device)
        self.batch_size = max(1, int(batch_size))
        self.tile_size = max(16, int(tile_size))
        self.amp = bool(amp)
        self.pin_memory = bool(pin_memory) and self.device.startswith("cuda")
        self._device_stats: dict[str, torch.Tensor] = {}
        self.model_path = None if model_path is None else str(model_path)
        self.num_threads = num_threads
        self._blob: bytes | None = None
        if net is None:
            net, meta_loaded = _cached_net(self.model_path, self.device)
            meta = meta or meta_loaded
        self.net = net.to(self.device).eval()
        self.meta = dict(meta or {})
        # Platt scaling of the change logit from the checkpoint (geochange.model.calibrate).
        self.calibration = calibration_of(self.meta)
        t, c = self.stats.shape[:2]
        if t < 2:
            raise ModelError(f"stack: {t} date(s), at least 2 are needed to detect change")
        if self.net.band_count is not None and self.net.band_count != c:
            raise ModelError(_band_message(self.net.band_count, c))
        #: context each sub-tile carries when the detector runs alone (a chain passes its own)
        self.halo = int(self.net.halo(t))
        if wavelengths is not None and len(wavelengths) != c:
            raise ModelError(f"wavelengths: got {len(wavelengths)} values for {c} bands")
        self.wavelengths = wavelength_array(wavelengths, c)

    # -- pickling: path (or weights) + statistics, never a live module on a device -------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("net")
        state["_device_stats"] = {}
        if self.model_path is None and self._blob is None:
            state["_blob"] = _state_bytes(self.net)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.model_path is not None:
            self.net = _cached_net(self.model_path, self.device)[0]
        else:
            self.net = _net_from_bytes(self._blob, self.device)

    def __dask_tokenize__(self) -> tuple:
        source = self.model_path or hashlib.sha256(self._blob or _state_bytes(self.net)).hexdigest()
        return (
            "ModelDetector",
            source,
            self.stats.tobytes(),
            self.wavelengths.tobytes(),
            self.device,
            self.amp,
            self.calibration,
            self.last_date_check,
            self.around_check,
            self.next_events,
            self.next_from,
        )

    # -- the stage ---------------------------------------------------------------------------
    name = "cnn-lstm"

    def reach(self, n_dates: int) -> Reach:
        return Reach(input=int(self.net.halo(n_dates)))

    def params(self) -> dict:
        return {
            "model": self.model_path or "",
            "model_name": str(self.meta.get("name", "")),
            "device": self.device,
            "amp": self.amp,
            "calibration": list(self.calibration),
            "last_date_check": self.last_date_check,
            "around_check": self.around_check,
            "next_events": self.next_events,
        }

    def run(self, block: Block) -> None:
        """Set the block's normalised input, validity, probability and interval; sub-tiles
        carry ``block.halo`` px of context (the context the chain's later stages need)."""
        x, valid = self._prepare(block.tile, in_place=block.owned)
        buffer = block.tile if block.owned else None
        block.tile = None
        block.prob, block.interval, *later = self._infer(
            x, valid, block.halo, block.region, block.core
        )
        if later:
            block.next_events = (later[0], later[1])
        # Later stages read x on the host: on the CPU it is the tile's own memory (normalised
        # in place when the block owns it); from a GPU it comes back into the tile's buffer.
        block.x, block.valid = _host(x, buffer), valid.cpu().numpy()

    # -- inference ------------------------------------------------------------------------------
    #: Tiling tells the detector the core of each tile (:data:`geochange.tiling.BlockFunction`).
    takes_core = True

    def __call__(
        self, tile: np.ndarray, core: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """Run on one tile (t, c, h, w) float32 NaN-nodata; returns (2, h, w) float32. With
        ``core`` (y0, y1, x0, x1) the network runs there only (NaN elsewhere)."""
        x, valid = self._prepare(tile)
        prob, interval = self._infer(x, valid, self.halo, core)[:2]
        nodata = valid.sum(dim=0).cpu().numpy() < 2
        prob[nodata] = np.nan
        interval[nodata] = np.nan
        return np.stack([prob, interval])

    def _prepare(self, tile: np.ndarray, in_place: bool = False) -> tuple[torch.Tensor, ...]:
        """The tile sent to the detector's device once and normalised there
        (:func:`~geochange.model.normalize.apply_tensor`): ``x`` (t, c, h, w) float32 and
        ``valid`` (t, h, w) bool tensors. With ``in_place`` on the CPU, ``x`` is the tile's
        own memory; to a GPU the tile goes from page-locked memory, without waiting for it."""
        tile = np.asarray(tile, dtype=np.float32)
        if tile.ndim != 4 or tile.shape[:2] != self.stats.shape[:2]:
            raise ModelError(
                f"tile: got shape {tile.shape}, expected (t={self.stats.shape[0]}, "
                f"c={self.stats.shape[1]}, h, w) like the scene statistics"
            )
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        if self.device == "cpu":
            own = in_place and tile.flags.writeable and tile.flags.c_contiguous
            data = torch.from_numpy(tile if own else np.array(tile, order="C"))
        else:
            if not tile.flags.writeable:  # torch shares only writeable arrays
                tile = tile.copy()
            data = torch.from_numpy(tile)
            if self.pin_memory:
                data = data.pin_memory()
            data = data.to(self.device, non_blocking=self.pin_memory)
        stats = self._device_stats.get(self.device)
        if stats is None:
            stats = self._device_stats[self.device] = torch.from_numpy(self.stats).to(self.device)
        return apply_tensor(data, stats)

    def _infer(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        halo: int,
        region: tuple[int, int, int, int] | None = None,
        core: tuple[int, int, int, int] | None = None,
    ) -> tuple[np.ndarray, ...]:
        """(prob, interval) of a normalised tile on the device, in sub-tiles of ``tile_size``
        px with a halo of ``halo`` px clipped at the tile edge (exact, like tiling), batched by
        shape; with ``next_events``, also their probabilities and date indices,
        (next_events, h, w) each. With ``region`` (y0, y1, x0, x1) only there (NaN
        elsewhere), its sub-tiles cut along the chunk's ``core`` inside it where given."""
        h, w = x.shape[2:]
        whole = region is None or tuple(region) == (0, h, 0, w)
        new = np.empty if whole else functools.partial(np.full, fill_value=np.nan)
        out = [new((h, w), dtype=np.float32), new((h, w), dtype=np.float32)]
        if self.next_events:
            out += [new((self.next_events, h, w), dtype=np.float32) for _ in range(2)]
        wins = (
            windows(h, w, self.tile_size, halo)
            if whole
            else region_windows(h, w, region, self.tile_size, halo, along=core)
        )
        groups: dict[tuple[int, int], list[Window]] = {}
        for win in wins:
            rows, cols = win[0]
            groups.setdefault((rows.stop - rows.start, cols.stop - cols.start), []).append(win)
        for items in groups.values():
            for k in range(0, len(items), self.batch_size):
                batch = items[k : k + self.batch_size]
                xs, vs = (_batched([a[(..., *read)] for read, _, _ in batch]) for a in (x, valid))
                results = self._forward(xs, vs)
                del xs, vs
                for i, (_, crop, write) in enumerate(batch):
                    for array, result in zip(out, results):
                        array[(..., *write)] = result[i][(..., *crop)]
        return tuple(out)

    def _forward(self, x: torch.Tensor, v: torch.Tensor) -> tuple[np.ndarray, ...]:
        wl = self._device_wavelengths(len(x))
        use_amp = self.amp and self.device.startswith("cuda")
        autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
        with torch.inference_mode(), autocast:
            prob, k = self._judge(x, v, wl)
            later = self._next_events(x, v, wl, prob, k) if self.next_events else ()
        prob_np = prob.cpu().numpy()
        bad = ~np.isfinite(prob_np) & (v.sum(dim=1) >= 2).cpu().numpy()
        if bad.any():
            raise ModelError(
                f"model {self.meta.get('name', 'cnn-lstm')!r}: the network gave non-finite "
                f"values (NaN or inf) for {int(bad.sum())} of {bad.size} pixels of a tile with "
                "valid data; its weights are broken (retrain or pass another --model) or the "
                "input values are out of range"
            )
        return (prob_np, k.cpu().numpy(), *(a.cpu().numpy() for a in later))

    def _device_wavelengths(self, n: int) -> torch.Tensor:
        return torch.from_numpy(self.wavelengths).to(self.device).expand(n, -1)

    def _judge(
        self, x: torch.Tensor, v: torch.Tensor, wl: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, h, w) each: the change probability and most likely interval of a series, with
        the check around the change and the last-date check (module notes)."""
        change, intervals = self.net(x, v, wl)
        scale, bias = self.calibration
        prob = torch.sigmoid(change.float() * scale + bias)
        t = x.shape[1]
        if self.around_check and t > 2 * AROUND_DATES:
            seen = intervals.float().argmax(dim=1)[:, None] + 1  # the date the change is seen
            dates = torch.arange(t, device=x.device)[None, :, None, None]
            near = (dates >= seen - AROUND_DATES) & (dates < seen + AROUND_DATES)
            around, _ = self.net(x, v & near, wl)
            prob = torch.minimum(prob, torch.sigmoid(around.float() * scale + bias))
        if not (self.last_date_check and x.shape[1] >= 3):
            return prob, intervals.float().argmax(dim=1).to(torch.float32)
        ref, ref_valid = last_date_reference(x, v)
        pair = torch.stack([ref, x[:, -1]], dim=1)
        pair_valid = torch.stack([ref_valid, v[:, -1]], dim=1)
        change2, _ = self.net(pair, pair_valid, wl)
        prob2 = torch.sigmoid(change2.float() * scale + bias)
        prob2 = torch.where(last_date_only(x, ref), prob2, torch.zeros_like(prob2))
        return combine_last_date(prob, intervals, prob2)

    def _next_events(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        wl: torch.Tensor,
        prob: torch.Tensor,
        k: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, n, h, w) each: the probability and date index of each pixel's next
        ``next_events`` events, each judged on the series from the previous event's date on.

        A pass runs over the dates from the earliest previous event of the pixels whose
        previous event reached :attr:`next_from` (the others have none to follow): in a scene
        whose changes are late, the dates before them are not run again."""
        b, t, c, h, w = x.shape
        start = k.long() + 1  # the previous event's date index
        probs = torch.zeros((b, self.next_events, h, w), dtype=torch.float32, device=x.device)
        found = torch.zeros_like(probs)
        for n in range(self.next_events):
            wanted = prob >= self.next_from
            if not bool(wanted.any()):
                break
            s0 = int(start[wanted].min())
            if t - s0 < 2:
                break
            xs, vs = x[:, s0:], valid[:, s0:]
            first = (start - s0).clamp(0, t - s0 - 1)
            before = torch.arange(t - s0, device=x.device)[None, :, None, None] < first[:, None]
            # Dates before the event show its date's look and are invalid: no change, no state.
            look = torch.gather(xs, 1, first[:, None, None].expand(b, 1, c, h, w))
            prob, k = self._judge(torch.where(before[:, :, None], look, xs), vs & ~before, wl)
            start = k.long() + 1 + s0
            probs[:, n], found[:, n] = prob, start.to(torch.float32)
        return probs, found


def _batched(arrays: list[torch.Tensor]) -> torch.Tensor:
    """The sub-tiles stacked on a new first axis; one contiguous sub-tile is not copied (a tile
    run as one sub-tile keeps one copy of its series in memory, not two)."""
    if len(arrays) == 1:
        return arrays[0].contiguous()[None]
    return torch.stack(arrays)


def _host(x: torch.Tensor, buffer: np.ndarray | None) -> np.ndarray:
    """``x`` as a numpy array on the host: its own memory on the CPU; from a GPU, copied into
    ``buffer`` when it is float32 of the same shape (else a new array)."""
    if x.device.type == "cpu":
        return x.numpy()
    if buffer is not None and buffer.dtype == np.float32 and buffer.shape == tuple(x.shape):
        torch.from_numpy(buffer).copy_(x)
        return buffer
    return x.cpu().numpy()


def last_date_reference(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last-date check's reference look of the dates before the last.

    Args:
        x: (b, t, c, h, w) normalised bands, t >= 3, nodata filled forward (``normalize.apply``).
        valid: (b, t, h, w) bool.

    Returns:
        ``ref`` (b, c, h, w): per pixel the median of its last :data:`LAST_REFERENCE_DATES`
        valid looks before the last date; with fewer valid looks, its last valid look before
        the last date (``x`` carries it forward over nodata). A wholly nodata date therefore
        changes nothing, as in the network. ``ref_valid`` (b, h, w): some date before the last
        is valid.
    """
    t = x.shape[1]
    before = valid[:, : t - 1]
    prev = x[:, t - 2]  # the last valid look before the last date (filled forward)
    ref_valid = before.any(dim=1)
    # Rank of each valid look counted back from the date before the last: 1 = latest.
    rank = torch.flip(torch.cumsum(torch.flip(before.to(torch.int32), [1]), dim=1), [1])
    chosen = before & (rank <= LAST_REFERENCE_DATES)
    if not bool(chosen.sum(dim=1).max() >= LAST_REFERENCE_DATES):
        return prev, ref_valid
    # Each pixel's chosen looks gathered (the date of rank k, for k = 1..LAST_REFERENCE_DATES),
    # not the series masked: memory does not grow with t.
    looks = []
    for k in range(1, LAST_REFERENCE_DATES + 1):
        at = (chosen & (rank == k)).to(torch.int8).argmax(dim=1)  # (b, h, w)
        index = at[:, None, None].expand(-1, 1, x.shape[2], -1, -1)
        looks.append(torch.gather(x, 1, index)[:, 0])
    med = torch.median(torch.stack(looks, dim=1), dim=1).values
    enough = (chosen.sum(dim=1) >= LAST_REFERENCE_DATES)[:, None]
    return torch.where(enough, med, prev), ref_valid


def last_date_only(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(b, h, w) bool: the last date departs from ``ref`` at least :data:`STABLE_RATIO` times
    as far as the largest step between consecutive looks before it.

    ``x``: (b, t, c, h, w) normalised bands with nodata filled along time (a nodata date
    repeats a valid look, so it adds no step); ``ref``: (b, c, h, w) from
    :func:`last_date_reference`. Distances are band means of absolute differences.
    """
    t = x.shape[1]
    depart = (x[:, -1] - ref).abs().mean(dim=1)
    largest = torch.zeros_like(depart)
    for i in range(1, t - 1):  # one date at a time: memory does not grow with t
        largest = torch.maximum(largest, (x[:, i] - x[:, i - 1]).abs().mean(dim=1))
    return depart >= STABLE_RATIO * largest


def combine_last_date(
    prob: torch.Tensor, intervals: torch.Tensor, prob_pair: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The series' probability and change date after the last-date check.

    With the series' change probability ``p``, its interval distribution ``q = softmax(l)``
    and the pair's probability ``p2``, the probability of a change on an earlier date is
    ``E = p (1 - q_last)``, of one on the last date ``L = p q_last``; the check raises ``L`` to
    ``max(L, p2 (1 - E))`` and leaves ``E`` as it is.

    Args:
        prob: (b, h, w) the series' change probability; intervals: (b, t-1, h, w) its interval
            logits; prob_pair: (b, h, w) the pair's change probability.

    Returns:
        ``prob`` (b, h, w), never below the series' own, and ``k`` (b, h, w) float, the most
        likely interval (t - 2 = the last date).
    """
    q = torch.softmax(intervals.float(), dim=1)
    earlier = prob * (1.0 - q[:, -1])
    last = prob * q[:, -1]
    raised = torch.maximum(last, prob_pair * (1.0 - earlier))
    out = prob + (raised - last)  # exactly the series' value where the pair does not raise it
    k = torch.cat([prob[:, None] * q[:, :-1], raised[:, None]], dim=1).argmax(dim=1)
    keep = raised == last  # the series' own date where the check changed nothing
    k = torch.where(keep, q.argmax(dim=1), k)
    return out, k.to(torch.float32)


def _band_message(trained: int, found: int) -> str:
    return (
        f"the model was trained on {trained} bands but the stack has {found}; use the default "
        "band-agnostic model or retrain on this band count"
    )


def model_detector(
    sample: np.ndarray,
    model_path: str | os.PathLike | None = None,
    device: Device | str = "auto",
    **kwargs: object,
) -> ModelDetector:
    """A :class:`ModelDetector` for a stack, statistics computed once from ``sample``.

    Args:
        sample: (t, c, n) float32 decimated read of the whole scene (``io.read.read_sample``),
            NaN = nodata.
        model_path: checkpoint from ``geochange train``; None = the shipped default model.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        **kwargs: further :class:`ModelDetector` options (batch_size, tile_size, amp, ...).

    Raises:
        ModelError: the checkpoint is missing or unreadable, or its band count differs from the
            stack's.
    """
    sample = np.asarray(sample)
    if sample.ndim != 3:
        raise ValueError(f"sample: got shape {sample.shape}, expected (t, c, n)")
    dev = resolve_device(str(device))
    net, meta = _cached_net(None if model_path is None else str(model_path), dev)
    if net.band_count is not None and net.band_count != sample.shape[1]:
        raise ModelError(
            f"model {meta.get('path')}: " + _band_message(net.band_count, sample.shape[1])
        )
    stats = scene_stats(sample)
    logger.info(
        "model %s (%s), %d dates, %d bands", meta.get("name"), meta.get("path"), *sample.shape[:2]
    )
    return ModelDetector(net, stats, device=dev, model_path=meta.get("path"), meta=meta, **kwargs)


def fit(sample: np.ndarray, context: Context, name: str = "cnn-lstm") -> ModelDetector:
    """The deep model's detector for a scene: :func:`model_detector` with the context's model,
    device, batch size, precision and wavelengths."""
    kwargs: dict[str, object] = {"amp": bool(context.amp), "wavelengths": context.wavelengths}
    if context.batch_size is not None:
        kwargs["batch_size"] = int(context.batch_size)
    return model_detector(sample, model_path=context.model, device=context.device, **kwargs)
