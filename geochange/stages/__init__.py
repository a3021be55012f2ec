"""The passes of detection, one stage per module, and the chain that runs them on a tile.

A detection run is a chain of stages built once per scene (:func:`build_chain`)::

    coregister ─► clouds ─► detector (network | cva | irmad | diff) ─► refine ─► micro ─► emerge

Each stage has a ``role``:

- ``"stack"``: changes how the stack is read, before tiling (co-registration sets each date's
  shift; the reader resamples it away on every read, with its own margin).
- ``"input"``: rewrites the tile before the detector (the cloud screen turns flagged pixels
  into nodata).
- ``"detector"``: turns the tile into a change probability and a change interval per pixel.
- ``"result"``: rewrites the detector's probability and interval (refine, micro, emerge).

A stage object has ``name`` (its registry name), ``reach(n_dates)`` (how far it looks, see
:class:`Reach`), ``params()`` (what the ``runs`` record and the dask token say of it) and
``run(block)`` (its block function, updating a :class:`Block` in place). It is fitted on the
scene's decimated sample by its module's ``fit(sample, context)`` and must pickle (dask ships it
to workers). The chain's halo, dask token, ``runs`` record and the CLI's ``--skip`` all come from
the stages (:data:`REGISTRY`): adding a pass is one module plus one registry entry.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from geochange.errors import InputError
from geochange.memory import release_freed

__all__ = [
    "DETECTORS",
    "OPTIONAL",
    "REGISTRY",
    "Block",
    "Chain",
    "Context",
    "Reach",
    "Stage",
    "StageSpec",
    "build_chain",
    "parse_skip",
    "prepare_stack",
]

Role = Literal["stack", "input", "detector", "result"]


class Reach(NamedTuple):
    """How far a stage looks around an output pixel, in pixels.

    Attributes:
        input: of the (screened) input tile.
        result: of the previous stage's probability and interval (result stages only).
    """

    input: int
    result: int = 0


@dataclasses.dataclass
class Block:
    """What flows through the stages of one tile.

    Attributes:
        tile: (t, c, h, w) float32 reflectance as read, NaN = nodata (input stages rewrite it;
            None once the network detector has normalised it into ``x``).
        owned: the stages may overwrite ``tile`` in place: it was read for this block alone
            (else an input stage that rewrites it works on a copy, and the tile as given
            stays as it was).
        region: (y0, y1, x0, x1), the pixels whose detector output the later stages use (the
            chunk's core and the result stages' reach around it); the detector may leave the
            rest NaN, and the result stages give their results there only. None: every pixel.
        core: (y0, y1, x0, x1), the chunk's core inside ``region``: the detector and the
            result stages cut their sub-tiles along it (:func:`geochange.tiling.region_windows`).
            None: ``region``.
        halo: pixels of context around the core that the detector's input carries (the
            chain's halo without the input stages' reach).
        x: (t, c, h, w) float32 the tile normalised by the deep model's scene statistics, 0
            where invalid (set by the network detector; None after a classical detector).
        valid: (t, h, w) bool valid pixels of ``x``.
        prob: (h, w) float32 change probability (set by the detector).
        interval: (h, w) float32 change interval k (change first seen on date k + 1).
        next_events: the events after each pixel's first, when the detector looks for them
            (:mod:`geochange.stages.network`): probabilities and date indices, (n, h, w)
            float32 each; else None.
    """

    tile: np.ndarray | None
    halo: int = 0
    owned: bool = False
    region: tuple[int, int, int, int] | None = None
    core: tuple[int, int, int, int] | None = None
    x: np.ndarray | None = None
    valid: np.ndarray | None = None
    prob: np.ndarray | None = None
    interval: np.ndarray | None = None
    next_events: tuple[np.ndarray, np.ndarray] | None = None


class Stage(Protocol):
    """One pass of the chain (see the module docstring)."""

    name: str

    def reach(self, n_dates: int) -> Reach: ...

    def params(self) -> dict[str, Any]: ...

    def run(self, block: Block) -> None: ...


@dataclasses.dataclass(frozen=True)
class Context:
    """What stages are fitted with, besides the scene sample.

    Attributes:
        wavelengths: band centres in nm (None = unknown), told to the deep model.
        masks: the stack carries the user's cloud masks (the cloud screen then stays off: the
            user's masks are trusted as they are).
        model: checkpoint of the deep model (None = the shipped default).
        device: "auto", "cpu" or "cuda" for the deep model.
        batch_size: sub-tiles per forward pass of the deep model (None = its default).
        amp: float16 autocast on CUDA for the deep model.
    """

    wavelengths: tuple[float | None, ...] | None = None
    masks: bool = False
    model: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    amp: bool = False


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A registry entry: where a stage lives and when it applies.

    Attributes:
        name: the stage's name (``--skip`` and the ``runs`` record use it).
        role: see the module docstring.
        module: the module whose ``fit(sample, context)`` builds the stage (``fit_stack(stack)``
            for a stack stage).
        summary: one line for ``--help``.
        after: the detectors a result stage follows (empty = any).

    A stage whose ``fit`` returns None does not apply to the scene (too few dates or bands, or,
    for the cloud screen, masks given by the user).
    """

    name: str
    role: Role
    module: str
    summary: str
    after: tuple[str, ...] = ()

    def load(self) -> Any:
        return importlib.import_module(self.module)


#: Every stage, in chain order. Detectors are the choices of ``--method``.
REGISTRY: tuple[StageSpec, ...] = (
    StageSpec(
        "coregister",
        "stack",
        "geochange.stages.coregister",
        "estimate each date's whole shift (sub-pixel, up to 4 px) and resample it away",
    ),
    StageSpec(
        "clouds",
        "input",
        "geochange.stages.clouds",
        "flag clouds and cloud shadows from the dates themselves and read them as nodata "
        "(needs 3 dates and 4 bands; off when --masks are given)",
    ),
    StageSpec("cnn-lstm", "detector", "geochange.stages.network", "the deep CNN-LSTM model"),
    StageSpec("cva", "detector", "geochange.stages.baselines", "change vector analysis"),
    StageSpec("irmad", "detector", "geochange.stages.baselines", "IR-MAD (Nielsen 2007)"),
    StageSpec("diff", "detector", "geochange.stages.baselines", "standardised differencing"),
    StageSpec(
        "refine",
        "result",
        "geochange.stages.refine",
        "sharpen the model's probability along each pixel's own series",
        after=("cnn-lstm",),
    ),
    StageSpec(
        "micro",
        "result",
        "geochange.stages.micro",
        "add small objects whose local contrast steps at one date and stays (3 dates)",
        after=("cnn-lstm",),
    ),
    StageSpec(
        "emerge",
        "result",
        "geochange.stages.emerge",
        "add objects that emerge from their surroundings at one date and stay apart (4 dates)",
        after=("cnn-lstm",),
    ),
)

#: Names of the detectors (``--method``).
DETECTORS: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.role == "detector")
#: Names of the stages that can be skipped (``--skip``).
OPTIONAL: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.role != "detector")
_SPECS = {s.name: s for s in REGISTRY}


def parse_skip(skip: str | Sequence[str] | None, flag: str = "--skip") -> frozenset[str]:
    """``"clouds,micro"`` or ``["clouds", "micro"]`` → frozenset of stage names (checked)."""
    if skip is None:
        return frozenset()
    names = [s.strip() for s in (skip.split(",") if isinstance(skip, str) else skip)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in OPTIONAL]
    if unknown:
        raise InputError(
            f"{flag}: found {', '.join(map(repr, unknown))}, expected stage names among "
            f"{', '.join(OPTIONAL)}; e.g. {flag} clouds,micro"
        )
    return frozenset(names)


class Chain:
    """The block function of a run: the fitted input, detector and result stages in order.

    ``chain(tile (t, c, h, w) float32 NaN-nodata) -> (2, h, w) float32``: band 0 the change
    probability (NaN = nodata), band 1 the change interval k (change first seen on date k + 1).
    A detector that looks for the next events (:attr:`Block.next_events`, n of them) adds 2n
    bands: their probabilities, then their date indices.

    Args:
        stages: fitted stages, the input stages first, then one detector, then result stages.
        n_dates: number of dates of the stack (the reach of some stages grows with it).
        stack_stages: names and parameters of the stack stages that were applied before
            tiling (for the ``runs`` record).

    Attributes:
        overwrite_input: the tiles the chain is given are read for it alone, and its stages may
            overwrite them in place (the cloud screen and the network's normalisation then make
            no copies of the series). False (the default): a tile given stays as it was. A
            detection run sets it: each of its tasks reads its own tile from the files.
    """

    overwrite_input: bool = False
    #: Tiling tells the chain the core of each tile (see :data:`geochange.tiling.BlockFunction`).
    takes_core = True

    def __init__(
        self,
        stages: Sequence[Stage],
        n_dates: int,
        stack_stages: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        roles = [_SPECS[s.name].role for s in stages]
        if roles.count("detector") != 1:
            raise ValueError(f"a chain needs exactly one detector, got stages {roles}")
        k = roles.index("detector")
        if any(r != "input" for r in roles[:k]) or any(r != "result" for r in roles[k + 1 :]):
            raise ValueError(f"stages out of order: {[s.name for s in stages]}")
        self.stages = tuple(stages)
        self.n_dates = int(n_dates)
        self.stack_stages = tuple((str(n), dict(p)) for n, p in stack_stages)
        self.detector = stages[k]
        self._detector_at = k
        #: pixels around an output pixel whose detector output the result stages read
        self.result_margin = sum(s.reach(self.n_dates).result for s in self.stages[k + 1 :])
        halo, detector_halo = self.halos(self.n_dates)
        #: context the detector's input carries (see :class:`Block`)
        self.detector_halo = detector_halo
        #: pixels of context each tile needs around its chunk
        self.halo = halo

    def halos(self, n_dates: int) -> tuple[int, int]:
        """``(halo, detector_halo)`` of these stages over a series of ``n_dates`` dates (the
        reach of some stages grows with the dates: a window's length, see
        :func:`geochange.plan.choose_window`)."""
        k = self._detector_at
        # Walk back from the output. A stage needs the input exact over its output's margin
        # plus its input reach, and the previous result over the margin plus its result reach;
        # an input stage widens what every later stage reads by its own reach.
        margin, need = 0, 0
        for stage in reversed(self.stages[k:]):
            reach = stage.reach(n_dates)
            need = max(need, margin + reach.input)
            margin += reach.result
        detector_halo = need
        for stage in self.stages[:k]:
            need += stage.reach(n_dates).input
        return need, detector_halo

    @property
    def names(self) -> tuple[str, ...]:
        """Names of every stage that runs, in order (stack stages first)."""
        return tuple(n for n, _ in self.stack_stages) + tuple(s.name for s in self.stages)

    @property
    def method(self) -> str:
        return self.detector.name

    # The deep model's runtime settings, read and set by the pipeline.
    @property
    def device(self) -> str:
        return str(getattr(self.detector, "device", "cpu"))

    @property
    def meta(self) -> dict:
        return dict(getattr(self.detector, "meta", {}) or {})

    @property
    def num_threads(self) -> int | None:
        return getattr(self.detector, "num_threads", None)

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        if hasattr(self.detector, "num_threads"):
            self.detector.num_threads = value

    def record(self) -> dict[str, Any]:
        """What the ``runs`` record says of the chain: stages in order and their parameters."""
        params = dict(self.stack_stages)
        params.update({s.name: s.params() for s in self.stages})
        return {"stages": list(self.names), "stage_params": params}

    def __dask_tokenize__(self) -> tuple:
        from dask.base import tokenize

        return ("Chain", self.n_dates, tuple(tokenize(s) for s in self.stages))

    def __call__(
        self,
        tile: np.ndarray,
        overwrite: bool | None = None,
        core: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """The chain on one tile; ``overwrite`` (default :attr:`overwrite_input`): its stages
        may overwrite ``tile`` in place; ``core`` (y0, y1, x0, x1): only the output there is
        used (the detector then runs on the core and the result stages' reach around it, not
        on the input stages' reach, and the result stages give their results there; the rest
        of the output is NaN)."""
        data = np.asarray(tile, dtype=np.float32)
        region = None
        if core is not None:
            m, (h, w) = self.result_margin, data.shape[2:]
            y0, y1, x0, x1 = core
            region = (max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m))
        if overwrite is None:
            overwrite = self.overwrite_input
        # A copy made here (another dtype) is the chain's own.
        owned = bool(overwrite) or (
            isinstance(tile, np.ndarray) and not np.may_share_memory(data, tile)
        )
        del tile  # the block holds it now
        shape = data.shape[2:]
        block = Block(data, halo=self.detector_halo, owned=owned, region=region, core=core)
        del data
        kept = None
        for i, stage in enumerate(self.stages):
            stage.run(block)
            release_freed()  # each stage's temporaries: do not stack them on the next one's
            if i == self._detector_at and core is not None:
                # The result stages read at most the detector's halo around the core, and
                # give their results on the detector's region only.
                kept = _crop(block, core, self.detector_halo, shape)
        prob, interval = block.prob, block.interval
        if block.valid is not None:
            nodata = block.valid.sum(axis=0) < 2
            prob[nodata] = np.nan
            interval[nodata] = np.nan
        if block.next_events is None:
            out = np.stack([prob, interval])
        else:
            probs, dates = block.next_events
            if block.valid is not None:
                probs[:, nodata] = np.nan
            out = np.concatenate([prob[None], interval[None], probs, dates])
        if kept is None:
            return out
        whole = np.full((out.shape[0], *shape), np.nan, np.float32)
        whole[(slice(None), *kept)] = out
        return whole


def _shifted(
    box: tuple[int, int, int, int] | None, dy: int, dx: int
) -> tuple[int, int, int, int] | None:
    """``box`` (y0, y1, x0, x1) in the coordinates of a crop that starts at (dy, dx)."""
    if box is None:
        return None
    y0, y1, x0, x1 = box
    return (y0 - dy, y1 - dy, x0 - dx, x1 - dx)


def _crop(
    block: Block, core: tuple[int, int, int, int], reach: int, shape: tuple[int, int]
) -> tuple[slice, slice]:
    """Cut the block's detector outputs and inputs to ``core`` and ``reach`` px around it
    (clipped to ``shape``), its region and core then in the crop's coordinates; returns the
    (rows, cols) kept, in tile coordinates."""
    y0, y1, x0, x1 = core
    h, w = shape
    kept = (slice(max(0, y0 - reach), min(h, y1 + reach)),
            slice(max(0, x0 - reach), min(w, x1 + reach)))  # fmt: skip
    block.prob, block.interval = block.prob[kept], block.interval[kept]
    if block.x is not None:
        block.x, block.valid = block.x[(..., *kept)], block.valid[(..., *kept)]
    if block.tile is not None:
        block.tile = block.tile[(..., *kept)]
    if block.next_events is not None:
        block.next_events = tuple(a[(..., *kept)] for a in block.next_events)
    dy, dx = kept[0].start, kept[1].start
    block.region, block.core = _shifted(block.region, dy, dx), _shifted(block.core, dy, dx)
    return kept


def build_chain(
    sample: np.ndarray,
    method: str = "cnn-lstm",
    skip: frozenset[str] | Sequence[str] = frozenset(),
    context: Context | None = None,
    stack_stages: Sequence[tuple[str, dict[str, Any]]] = (),
) -> Chain:
    """Fit the chain's input, detector and result stages on a scene sample.

    Args:
        sample: (t, c, n) float32 decimated read of the whole scene, NaN = nodata
            (:func:`geochange.io.read.read_sample`).
        method: the detector, one of :data:`DETECTORS`.
        skip: optional stages left out (names from :data:`OPTIONAL`).
        context: what the stages are fitted with besides the sample.
        stack_stages: stack stages already applied (for the ``runs`` record).

    Raises:
        InputError: unknown method or stage name.
    """
    if method not in DETECTORS:
        raise InputError(
            f"--method: found {method!r}, expected one of {', '.join(DETECTORS)}; "
            "pick one of those (cnn-lstm is the default deep model)"
        )
    skip = parse_skip(list(skip))
    context = context or Context()
    sample = np.asarray(sample)
    stages = []
    for spec in REGISTRY:
        if spec.role == "stack":
            continue
        if spec.role == "detector" and spec.name != method:
            continue
        if spec.name in skip or (spec.after and method not in spec.after):
            continue
        stage = spec.load().fit(sample, context, spec.name)
        if stage is not None:
            stages.append(stage)
    return Chain(stages, sample.shape[0], stack_stages)


def prepare_stack(
    stack: Any, skip: frozenset[str] | Sequence[str] = frozenset()
) -> tuple[Any, list]:
    """Apply the stack stages (co-registration) that ``skip`` leaves on.

    Args:
        stack: a :class:`geochange.io.stack.Stack`.
        skip: stage names left out.

    Returns:
        The stack as the chain reads it, and (name, parameters) of each stack stage applied.
    """
    skip = parse_skip(list(skip))
    applied = []
    for spec in REGISTRY:
        if spec.role == "stack" and spec.name not in skip:
            stack, params = spec.load().fit_stack(stack)
            applied.append((spec.name, params))
    return stack, applied
