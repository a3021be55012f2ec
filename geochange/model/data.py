"""LightningDataModule: training chips sampled from synthetic scenes and labelled user stacks.

Scenes (:mod:`geochange.model.scenes`) are whole labelled stacks held in memory; each item is a
batch of chips from one scene (:func:`geochange.model.chips.sample_batch`, which documents the
batch dict).

Sources (``sources`` of :class:`ChangeDataModule`):

- ``{"synthetic": {"seeds": [lo, hi], "size": 128, "dates": [2, 10], "bands": [1, 16],
  "nuisance": ["low", "medium", "high"]}}``: scenes from :func:`geochange.synth.make_scene`
  generated on the fly, one per seed in ``range(lo, hi)``;
- ``{"stack": PATHS_OR_DIR, "labels": "label.tif" | "changes.gpkg", "dates": optional}``: a
  user stack; labels are a label raster on the stack grid (band 1 change 0/1/255, band 2 date
  index) or polygons (GeoPackage) with a ``date_index`` or ``change_date`` column, rasterised on
  the stack grid;
- ``{"stack": PATHS_OR_DIR, "examples": "examples.gpkg"}``: a user stack with example polygons
  (:mod:`geochange.io.examples`: ``change`` 1/0, ``labelled`` areas, a filled ``verdict``)
  instead of complete labels; pixels no example covers are ignored.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from geochange.errors import InputError
from geochange.model.chips import sample_batch
from geochange.model.scenes import LabelledScene, load_labelled_stack, synthetic_scene

__all__ = ["ChangeDataModule", "ChipBatches"]

logger = logging.getLogger(__name__)


class ChipBatches(Dataset):
    """Map-style dataset whose items are whole batches (use ``DataLoader(batch_size=None)``).

    Item ``i`` comes from scene ``scene_ids[order[i // batches_per_scene]]`` with a generator
    seeded by ``(seed, i)``, so a run is reproducible and consecutive items reuse a cached scene.

    Args:
        scene_ids: scene keys passed to ``load_scene``.
        load_scene: ``key -> LabelledScene``.
        length: number of batches.
        seed: base seed.
        batches_per_scene: consecutive batches drawn from one scene.
        shuffle: visit scenes in a seeded random order (else in order, cycling).
        offset: index of the first item (to continue a resumed run with new batches).
        cache_size: scenes kept in memory.
        **sample_kwargs: passed to :func:`sample_batch`.
    """

    def __init__(
        self,
        scene_ids: Sequence[Any],
        load_scene: Callable[[Any], LabelledScene],
        length: int,
        seed: int = 0,
        batches_per_scene: int = 4,
        shuffle: bool = True,
        offset: int = 0,
        cache_size: int = 2,
        **sample_kwargs: Any,
    ) -> None:
        if not scene_ids:
            raise InputError("training data: no scene; add a source to the data config")
        self.scene_ids = list(scene_ids)
        self.load_scene = load_scene
        self.length = int(length)
        self.seed = int(seed)
        self.batches_per_scene = max(1, int(batches_per_scene))
        self.shuffle = shuffle
        self.offset = int(offset)
        self.cache_size = max(1, int(cache_size))
        self.sample_kwargs = sample_kwargs
        self._cache: OrderedDict[Any, LabelledScene] = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def scene_key(self, i: int) -> Any:
        slot = (i + self.offset) // self.batches_per_scene
        n = len(self.scene_ids)
        if not self.shuffle:
            return self.scene_ids[slot % n]
        perm = np.random.default_rng([self.seed, slot // n]).permutation(n)
        return self.scene_ids[int(perm[slot % n])]

    def _scene(self, key: Any) -> LabelledScene:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        scene = self.load_scene(key)
        self._cache[key] = scene
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return scene

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        scene = self._scene(self.scene_key(i))
        rng = np.random.default_rng([self.seed, i + self.offset, 1])
        return sample_batch(scene, rng, **self.sample_kwargs)


class _Cached(Dataset):
    def __init__(self, items: list[dict[str, torch.Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def _range(v: Any, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    raise InputError(f"data config {name}: got {v!r}, expected a number or [low, high]")


class ChangeDataModule(pl.LightningDataModule):
    """Chips from synthetic scenes and/or labelled user stacks.

    Args:
        sources: training sources (see module docstring).
        val_sources: validation sources (same form); validation batches are fixed and cached.
        batch_size: chips per batch.
        chip: chip edge in pixels.
        batches_per_scene: consecutive training batches drawn from one scene.
        val_batches_per_scene: validation batches per validation scene.
        train_batches: length of the training "epoch" in batches (the trainer's ``max_steps``
            usually ends training first).
        change_fraction: share of chips centred on change (class-balanced sampling).
        max_dates: at most this many dates per batch.
        subset_dates: random date subsets per batch (varies T and date spacing).
        subset_bands: random band subsets per batch (band-agnostic models only).
        mask_clouds: probability that synthetic cloud masks are applied as nodata.
        object_balanced: centre change chips on random change objects, not pixels.
        hard_fraction: share of chips centred on hard negatives (unchanged pixels that look
            changed: phenology, clouds); must be <= 1 - change_fraction.
        unknown_wavelengths: probability per batch that the band wavelengths are withheld.
        micro_weight: focal-loss weight of pixels of change objects <= 9 px.
        end_on_change: share of training batches whose dates end on a date where a change is
            first seen, with earlier looks before it (see :func:`sample_batch`); validation
            batches never use it, so validation scores stay comparable.
        coregister: undo whole-date shifts of every scene (as ``detect`` does by default);
            a source may override it with its own ``coregister`` key.
        seed: base seed.
        num_workers: DataLoader workers (0 = in the training process).
    """

    def __init__(
        self,
        sources: Sequence[dict],
        val_sources: Sequence[dict] = (),
        batch_size: int = 8,
        chip: int = 48,
        batches_per_scene: int = 4,
        val_batches_per_scene: int = 1,
        train_batches: int = 100_000,
        change_fraction: float = 0.5,
        max_dates: int | None = None,
        subset_dates: bool = True,
        subset_bands: bool = True,
        mask_clouds: float = 0.25,
        object_balanced: bool = False,
        hard_fraction: float = 0.0,
        unknown_wavelengths: float = 0.0,
        micro_weight: float = 1.0,
        end_on_change: float = 0.0,
        coregister: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= end_on_change <= 1.0:
            raise InputError(f"data config end_on_change: got {end_on_change}, expected 0 to 1")
        if not (0.0 <= change_fraction <= 1.0 and 0.0 <= hard_fraction <= 1.0 - change_fraction):
            raise InputError(
                f"data config: change_fraction={change_fraction}, hard_fraction={hard_fraction}; "
                "expected both in [0, 1] with change_fraction + hard_fraction <= 1"
            )
        self.sources = [{"coregister": coregister, **s} for s in sources]
        self.val_sources = [{"coregister": coregister, **s} for s in val_sources]
        self.batch_size = batch_size
        self.chip = chip
        self.batches_per_scene = batches_per_scene
        self.val_batches_per_scene = val_batches_per_scene
        self.train_batches = train_batches
        self.sample_kwargs = {
            "batch_size": batch_size,
            "chip": chip,
            "change_fraction": change_fraction,
            "max_dates": max_dates,
            "subset_dates": subset_dates,
            "subset_bands": subset_bands,
            "mask_clouds": mask_clouds,
            "object_balanced": object_balanced,
            "hard_fraction": hard_fraction,
            "unknown_wavelengths": unknown_wavelengths,
            "micro_weight": micro_weight,
            "end_on_change": end_on_change,
        }
        self.seed = seed
        self.num_workers = num_workers
        self._val: _Cached | None = None

    @staticmethod
    def scene_keys(sources: Sequence[dict]) -> list[tuple[int, Any]]:
        """One key (source index, scene id) per scene of the sources."""
        keys: list[tuple[int, Any]] = []
        for i, src in enumerate(sources):
            if "synthetic" in src:
                lo, hi = _range(src["synthetic"].get("seeds", [0, 100]), "synthetic.seeds")
                keys += [(i, s) for s in range(lo, hi)]
            elif "stack" in src:
                if "labels" not in src and "examples" not in src:
                    raise InputError(
                        f"data source {i}: stack {src['stack']!r} has no `labels`; add a label "
                        "raster or a GeoPackage of change polygons, or `examples`"
                    )
                keys.append((i, 0))
            else:
                raise InputError(
                    f"data source {i}: got keys {sorted(src)}, expected `synthetic` or "
                    "`stack` + `labels`"
                )
        return keys

    @staticmethod
    def load(sources: Sequence[dict], key: tuple[int, Any]) -> LabelledScene:
        """The scene of a key from :meth:`scene_keys`."""
        src = sources[key[0]]
        if "synthetic" in src:
            cfg = src["synthetic"]
            return synthetic_scene(
                int(key[1]),
                size=int(cfg.get("size", 128)),
                dates=_range(cfg.get("dates", [2, 10]), "synthetic.dates"),
                bands=_range(cfg.get("bands", [1, 16]), "synthetic.bands"),
                nuisance=tuple(cfg.get("nuisance", ("low", "medium", "high"))),
                coregister=bool(src.get("coregister")),
            )
        return load_labelled_stack(
            src["stack"],
            src.get("labels"),
            dates=src.get("dates"),
            align=bool(src.get("align")),
            coregister=bool(src.get("coregister")),
            examples=src.get("examples"),
        )

    def train_dataset(self, offset: int = 0) -> ChipBatches:
        keys = self.scene_keys(self.sources)
        return ChipBatches(
            keys,
            _SourceLoader(self.sources),
            length=self.train_batches,
            seed=self.seed,
            batches_per_scene=self.batches_per_scene,
            shuffle=True,
            offset=offset,
            **self.sample_kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        offset = int(self.trainer.global_step) if self.trainer is not None else 0
        return DataLoader(
            self.train_dataset(offset),
            batch_size=None,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        if self._val is None:
            keys = self.scene_keys(self.val_sources)
            kwargs = dict(self.sample_kwargs, subset_bands=False, end_on_change=0.0)
            ds = ChipBatches(
                keys,
                _SourceLoader(self.val_sources),
                length=len(keys) * self.val_batches_per_scene,
                seed=self.seed + 1_000_003,
                batches_per_scene=self.val_batches_per_scene,
                shuffle=False,
                cache_size=1,
                **kwargs,
            )
            items = [ds[i] for i in range(len(ds))]
            logger.info("validation: %d batches from %d scenes", len(items), len(keys))
            self._val = _Cached(items)
        return DataLoader(self._val, batch_size=None, shuffle=False)


class _SourceLoader:
    """Picklable ``key -> LabelledScene`` for DataLoader workers."""

    def __init__(self, sources: list[dict]) -> None:
        self.sources = sources

    def __call__(self, key: Any) -> LabelledScene:
        return ChangeDataModule.load(self.sources, tuple(key))
