"""Train or fine-tune the CNN-LSTM from a YAML config (the library behind ``geochange train``).

The config (see pipelines/default_model.yaml) has sections ``model`` (network), ``task`` (loss,
optimizer), ``data`` (:class:`geochange.model.data.ChangeDataModule`), ``trainer`` (steps, time limit,
validation interval) and top-level ``seed``, ``name``, ``trained_on``, ``init``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from geochange.errors import InputError, OutputExistsError
from geochange.io.atomic import write_text

__all__ = ["load_config", "run_training"]

log = logging.getLogger(__name__)

_TOP_KEYS = {
    "seed", "name", "trained_on", "init", "model", "task", "data", "trainer", "calibration"
}  # fmt: skip


def _set(config: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise InputError(
            f"--set {assignment!r}: expected KEY=VALUE with a dotted key, e.g. "
            "--set trainer.max_steps=200"
        )
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts or parts[0] not in _TOP_KEYS:
        raise InputError(
            f"--set {assignment!r}: unknown section {parts[0] if parts else ''!r}; expected one "
            f"of {sorted(_TOP_KEYS)}"
        )
    node = config
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise InputError(f"--set {assignment!r}: {p!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | os.PathLike, overrides: tuple[str, ...] = ()) -> dict:
    """Read a training config and apply ``KEY=VALUE`` overrides (dotted keys, YAML values).

    Relative paths of stack and label sources are taken relative to the config file.
    """
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"config {path}: cannot read it as YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise InputError(f"config {path}: got a {type(config).__name__}, expected a mapping")
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise InputError(
            f"config {path}: unknown keys {sorted(unknown)}; expected some of {sorted(_TOP_KEYS)}"
        )
    for a in overrides:
        _set(config, a)
    base = path.resolve().parent
    for section in ("sources", "val_sources"):
        for src in config.get("data", {}).get(section, []) or []:
            for k in ("stack", "labels", "examples"):
                if k in src and isinstance(src[k], str) and not os.path.isabs(src[k]):
                    src[k] = str(base / src[k])
    return config


def _net_config(config: dict, init_net: Any | None) -> dict:
    from geochange.model import NET_KEYS  # torch: imported when training, not for --help

    cfg = {k: v for k, v in (config.get("model") or {}).items() if k in NET_KEYS}
    unknown = set(config.get("model") or {}) - set(NET_KEYS)
    if unknown:
        raise InputError(f"config model: unknown keys {sorted(unknown)}; expected {NET_KEYS}")
    if init_net is not None:
        init_cfg = init_net.config()
        differ = {k: (v, init_cfg[k]) for k, v in cfg.items() if init_cfg.get(k) != v}
        if differ:
            log.warning("model config %s replaced by the init model's architecture", differ)
        cfg = init_cfg
    return cfg


def run_training(
    config: dict,
    output: str | os.PathLike,
    resume: str | os.PathLike | None = None,
    init: str | None = None,
    max_minutes: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a model from a config dict; write the model, checkpoints and a report.

    Writes ``OUT`` (compact model file, loads with ``geochange.model.load_model``),
    ``OUT_checkpoints/`` (Lightning checkpoints for ``--resume``), ``OUT_logs/`` (metrics.csv),
    ``OUT.report.json`` / ``OUT.report.md`` (config, data, seeds, final validation metrics,
    wall time).

    Returns:
        The report dict.
    """
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from geochange._version import __version__
    from geochange.model import load_model, save_model
    from geochange.model.data import ChangeDataModule
    from geochange.model.task import ChangeTask

    t_start = time.perf_counter()
    output = Path(output)
    if resume:
        _check_resume(Path(resume))
    report_json = output.with_name(output.name + ".report.json")
    report_md = output.with_name(output.name + ".report.md")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"output {output}: exists; pass --overwrite to replace it")
    config = copy.deepcopy(config)
    seed = int(config.get("seed", 0))
    pl.seed_everything(seed, workers=True)
    tr = dict(config.get("trainer") or {})
    threads = tr.pop("threads", None)
    if threads:
        torch.set_num_threads(int(threads))

    calibration = _calibration_settings(config.get("calibration"))  # checked before training
    init = init if init is not None else config.get("init")
    init_net = None
    if init:
        init_net, init_meta = load_model(None if init == "default" else init)
        log.info("initialising from %s (%s)", init_meta.get("path"), init_meta.get("name"))
    net_cfg = _net_config(config, init_net)
    task_cfg = dict(config.get("task") or {})
    name = str(config.get("name", "cnn-lstm"))
    trained_on = str(config.get("trained_on", "see the training report"))
    minutes = max_minutes if max_minutes is not None else tr.pop("max_minutes", None)
    tr.pop("max_minutes", None)
    if minutes and tr.pop("anneal_by_time", True):
        # Anneal by the time budget too, leaving ~5 % for the final validation and writing.
        # With anneal_by_time false the schedule follows max_steps alone and the time limit is
        # only a safety stop (a step-bound run gives the same weights however loaded the machine).
        task_cfg.setdefault("time_budget_s", 0.95 * 60.0 * float(minutes))
    tr.pop("anneal_by_time", None)
    try:
        task = ChangeTask(**net_cfg, **task_cfg, name=name, trained_on=trained_on)
    except TypeError as exc:
        raise InputError(f"config task: {exc}; see pipelines/default_model.yaml") from exc
    if init_net is not None:
        task.net.load_state_dict(init_net.state_dict())

    data_cfg = dict(config.get("data") or {})
    data_cfg.setdefault("seed", seed)
    if net_cfg.get("in_bands") is not None:
        data_cfg["subset_bands"] = False
    try:
        dm = ChangeDataModule(**data_cfg)
    except TypeError as exc:
        raise InputError(f"config data: {exc}; see pipelines/default_model.yaml") from exc
    n_train = len(dm.scene_keys(dm.sources))
    n_val = len(dm.scene_keys(dm.val_sources))

    ckpt_dir = output.with_name(output.stem + "_checkpoints")
    has_val = n_val > 0
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="step{step:06d}" + ("-f1={val/f1:.3f}" if has_val else ""),
        auto_insert_metric_name=False,
        monitor="val/f1" if has_val else None,
        mode="max",
        save_last=True,
        save_top_k=1,
    )
    max_steps = int(tr.pop("max_steps", 1000))
    val_every = int(tr.pop("val_check_interval", max(1, max_steps // 5)))
    if not has_val:
        tr["limit_val_batches"] = 0
    accelerator = tr.pop("accelerator", "auto")
    trainer = pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        max_time=dt.timedelta(minutes=float(minutes)) if minutes else None,
        val_check_interval=min(val_every, dm.train_batches),
        check_val_every_n_epoch=None if has_val else 1,
        accelerator=accelerator,
        devices=tr.pop("devices", 1),
        callbacks=[ckpt],
        # OUT_logs/version_N/metrics.csv, one version per run (resumed runs too).
        logger=CSVLogger(str(output.with_name(output.stem + "_logs")), name=""),
        deterministic=tr.pop("deterministic", False),
        log_every_n_steps=int(tr.pop("log_every_n_steps", 10)),
        enable_progress_bar=bool(tr.pop("progress_bar", True)),
        enable_model_summary=False,
        **tr,
    )
    with warnings.catch_warnings():
        # A resumed or repeated run writes into the same checkpoint folder on purpose.
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        # Resuming mid-"epoch" is fine: the training batches are indexed from the restored
        # global step (ChangeDataModule.train_dataloader), so no batch is replayed.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended")
        # Never unpickle code from a checkpoint (checked before any work for a clear error).
        trainer.fit(
            task, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True
        )
    steps = int(trainer.global_step)
    best = ckpt.best_model_path or ckpt.last_model_path
    if best:
        task = ChangeTask.load_from_checkpoint(best, map_location="cpu", weights_only=True)
    metrics: dict[str, float] = {}
    if has_val:
        res = pl.Trainer(
            accelerator=accelerator,  # the final validation runs where training ran
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).validate(task, datamodule=dm, verbose=False)
        metrics = {k: round(float(v), 4) for k, v in (res[0] if res else {}).items()}
    net = task.net.cpu().eval()
    meta = {
        "name": name,
        "version": __version__,
        "trained_on": trained_on,
        "seed": seed,
        "steps": steps,
        "val": metrics,
    }
    if calibration is not None:
        from geochange.model.calibrate import fit_model_calibration

        try:
            meta["calibration"] = fit_model_calibration(net, **calibration)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"config calibration: {exc}; see pipelines/default_model.yaml"
            ) from exc
    wall = time.perf_counter() - t_start
    output.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, output, meta)

    report = {
        "output": str(output),
        "checkpoint": best,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "geochange_version": __version__,
        "torch_version": torch.__version__,
        "platform": platform.platform(),
        "accelerator": type(trainer.accelerator).__name__,
        "torch_threads": torch.get_num_threads(),
        "config": config,
        "init": init,
        "resume": str(resume) if resume else None,
        "seed": seed,
        "data": {
            "train_scenes": n_train,
            "val_scenes": n_val,
            "sources": dm.sources,
            "val_sources": dm.val_sources,
        },
        "model": {
            **net.config(),
            "params": sum(p.numel() for p in net.parameters()),
            "halo_8_dates": net.halo(8),
        },
        "steps": steps,
        "stopped_by_time_limit": bool(minutes) and steps < max_steps,
        "wall_time_s": round(wall, 1),
        "val_metrics": metrics,
        "calibration": meta.get("calibration"),
    }
    write_text(report_json, json.dumps(report, indent=2, default=str) + "\n")
    write_text(report_md, _markdown(report))
    return report


def _calibration_settings(section: object) -> dict | None:
    """The config's ``calibration`` section: None/false = off, true = defaults, a dict = settings
    (seeds, sizes, dates, bands, nuisance; see geochange.model.calibrate.DEFAULTS)."""
    if section is None or section is False:
        return None
    if section is True:
        return {}
    if not isinstance(section, dict):
        raise InputError(
            f"config calibration: found {section!r}, expected true, false or settings such as "
            "{seeds: [1000, 1024], sizes: [256, 512]}"
        )
    from geochange.model.calibrate import DEFAULTS

    unknown = set(section) - set(DEFAULTS)
    if unknown:
        raise InputError(
            f"config calibration: unknown keys {sorted(unknown)}; expected some of {list(DEFAULTS)}"
        )
    return dict(section)


def _markdown(r: dict) -> str:
    m = r["model"]
    lines = [
        f"# Training report: {Path(r['output']).name}",
        "",
        f"- created {r['created']}, geochange {r['geochange_version']}, torch {r['torch_version']}",
        f"- {r['accelerator']}, {r['torch_threads']} torch threads, {r['platform']}",
        f"- seed {r['seed']}, init {r['init'] or 'random'}, {r['steps']} steps, "
        f"wall time {r['wall_time_s'] / 60:.1f} min"
        + (" (stopped by the time limit)" if r["stopped_by_time_limit"] else ""),
        f"- data: {r['data']['train_scenes']} training scenes, "
        f"{r['data']['val_scenes']} validation scenes",
        f"- model: in_bands {m['in_bands']}, features {m['features']}, hidden {m['hidden']}, "
        f"{m['params']} parameters, halo {m['halo_8_dates']} px for 8 dates",
        "",
        "## Final validation metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in sorted(r["val_metrics"].items())] or ["| - | - |"]
    cal = r.get("calibration")
    if cal:
        lines += [
            "",
            "## Probability calibration (Platt scaling on whole validation scenes)",
            "",
            f"p = sigmoid({cal['scale']} × logit + {cal['bias']}), fitted on {cal['pixels']} "
            f"pixels of synthetic scenes {cal['scenes']} ({100 * cal['change_share']:.1f} % "
            f"changed). F1 at 0.5: {cal['f1_at_0.5_raw']} raw, {cal['f1_at_0.5_calibrated']} "
            f"calibrated (raw optimum {cal['f1_at_best_raw_threshold']} at "
            f"{cal['best_raw_threshold']}).",
        ]
    lines += [
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(r["config"], sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _check_resume(path: Path) -> None:
    """A ``--resume`` checkpoint must be a Lightning training checkpoint that loads as weights
    only (no pickled code runs).

    Raises:
        ModelError: missing, unreadable, holding more than weights, or not a training state.
    """
    import torch

    from geochange.errors import ModelError

    if not path.is_file():
        raise ModelError(
            f"--resume {str(path)!r}: file not found; pass OUT_checkpoints/last.ckpt of an "
            "earlier `geochange train` run"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage makes the unpickler raise anything
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ModelError(
            f"--resume {str(path)!r}: not loadable as weights only ({type(exc).__name__}: "
            f"{first}); pass OUT_checkpoints/last.ckpt of an earlier `geochange train` run"
        ) from None
    if not isinstance(obj, dict) or "state_dict" not in obj or "loops" not in obj:
        raise ModelError(
            f"--resume {str(path)!r}: not a training checkpoint (no Lightning training state); "
            "pass OUT_checkpoints/last.ckpt of an earlier `geochange train` run, or use --init "
            "to start from a model's weights"
        )
