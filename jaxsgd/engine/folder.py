"""The results folder of a sweep: its files, one pytree format, checkpoints, the fingerprint.

A results folder holds

* ``config.json`` — the sweep configuration (``SweepConfig.to_dict``), JSON;
* ``sweep.json`` — the folder format and the sweep's *provenance*
  (``jaxsgd.engine.provenance``): what determines its runs (configuration, data, model, loss,
  optimizer, probes) and which runs it holds. A different sweep pointed at the folder is
  refused, with the differences named, rather than mixed in;
* per finished batch-size group: ``group_bs{B}.nc`` (labelled metrics, netCDF) and
  ``params_bs{B}.npz`` (final parameters, leading ``[runs]`` axis);
* per running group: ``checkpoint_bs{B}.npz`` (the whole group state after the last chunk);
* per snapshot: ``snapshot_bs{B}_step{T}.npz`` (the whole group state after T steps, every
  run: parameters, optimizer state, sampler, keys, buffers), kept for good.

Parameters and checkpoints share one pytree format (``save_tree``/``load_tree``): an ``.npz``
with one array per leaf (``leaf_00000``, … in ``jax.tree`` order) and a JSON header (``meta``:
format, each leaf's path, shape and dtype, and what the caller adds). Every file is written by
one atomic writer (``jaxsgd._util.atomic_write``: temporary file, fsync, rename), so a process
killed at any moment leaves the previous file or the new one, never half of one. Nothing is
ever unpickled (``allow_pickle=False``). A folder or checkpoint written by another version of
the format is refused with a message saying how to run the sweep again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xarray as xr

from jaxsgd._util import atomic_write, key_name, write_npz
from jaxsgd.config import SweepConfig
from jaxsgd.engine.provenance import differences, runtime_text
from jaxsgd.engine.results import SweepResult, combine
from jaxsgd.engine.sharding import barrier, is_main_process

PyTree = Any
FORMAT = 4  # results-folder and pytree-file format; 3: before the loss monitor (divergence on
# the single minibatch loss), 2: before provenance, 1: before layers
CONFIG_FILE = "config.json"
SWEEP_FILE = "sweep.json"
_GROUP_RE = re.compile(r"group_bs(\d+)\.nc$")
_SNAPSHOT_RE = re.compile(r"snapshot_bs(\d+)_step(\d+)\.npz$")
_RERUN = ("run the sweep again into a new folder, or pass overwrite=True (--overwrite) to "
          "replace this one")


class CheckpointError(ValueError):
    """A checkpoint or results folder that cannot be resumed or loaded; the message says why."""


def group_file(folder: Path, batch_size: int) -> Path:
    return folder / f"group_bs{batch_size}.nc"


def params_file(folder: Path, batch_size: int) -> Path:
    return folder / f"params_bs{batch_size}.npz"


def checkpoint_file(folder: Path, batch_size: int) -> Path:
    return folder / f"checkpoint_bs{batch_size}.npz"


def snapshot_file(folder: Path, batch_size: int, step: int) -> Path:
    return folder / f"snapshot_bs{batch_size}_step{step:09d}.npz"


class SnapshotFile:
    """A snapshot in a results folder, read when asked (``SweepResult.snapshots`` holds these
    or, for a sweep without a folder, the states themselves)."""

    def __init__(self, path: Path):
        self.path = path

    def __repr__(self) -> str:
        return f"SnapshotFile({str(self.path)!r})"

    def state(self, template: PyTree | None = None) -> PyTree:
        """The whole group state: in ``template``'s structure, or as nested dicts of its
        fields (``"params"``, ``"opt_state"``, ``"sampler"``, …)."""
        return load_tree(self.path, template)[0]

    def field(self, name: str, template: PyTree) -> PyTree:
        """One field of the state (``"params"``) in the structure of ``template`` (that field's
        tree: the same leaves in the same order), without rebuilding the rest."""
        with open(self.path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            header = json.loads(str(npz["meta"]))
            leaves = [npz[f"leaf_{i:05d}"] for i, row in enumerate(header["leaves"])
                      if row[0][:1] == [["k", name]]]
        return jax.tree.unflatten(jax.tree.structure(template), leaves)


def snapshot_files(folder: Path) -> dict[int, dict[int, SnapshotFile]]:
    """The snapshots of a results folder: {batch size: {step: SnapshotFile}}."""
    found: dict[int, dict[int, SnapshotFile]] = {}
    for file in sorted(folder.iterdir()):
        match = _SNAPSHOT_RE.match(file.name)
        if match:
            found.setdefault(int(match.group(1)), {})[int(match.group(2))] = SnapshotFile(file)
    return found


# --------------------------------------------------------------------------- pytree files


def _leaf_table(tree: PyTree) -> list[list]:
    """[path, shape, dtype] of each leaf (arrays or ``ShapeDtypeStruct``s); the path is a list
    of [kind, name] entries, kind "k" (dict key or attribute) or "i" (sequence index)."""
    return [[[["i" if hasattr(k, "idx") else "k", key_name(k)] for k in path],
             list(leaf.shape), str(np.dtype(leaf.dtype))]
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def save_tree(path: Path, tree: PyTree, meta: dict | None = None) -> None:
    """Write a pytree of arrays and a JSON-able ``meta`` dict atomically to ``path`` (.npz)."""
    tree = jax.tree.map(np.asarray, tree)
    header = dict(meta or {}, format=FORMAT, leaves=_leaf_table(tree))
    arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}
    atomic_write(path, lambda tmp: write_npz(tmp, meta=np.asarray(json.dumps(header)), **arrays))


def _rebuild(entries: list[tuple[list, np.ndarray]]) -> PyTree:
    """Nested dicts (lists where the stored path entries are sequence indices) from
    (path, leaf) pairs of ``_leaf_table``."""
    if len(entries) == 1 and not entries[0][0]:
        return entries[0][1]
    children: dict[str, list] = {}
    kinds = set()
    for path, leaf in entries:
        (kind, name), rest = path[0], path[1:]
        kinds.add(kind)
        children.setdefault(name, []).append((rest, leaf))
    if kinds == {"i"}:
        return [_rebuild(children[k]) for k in sorted(children, key=int)]
    return {name: _rebuild(child) for name, child in children.items()}


def load_tree(path: Path, template: PyTree | None = None,
              expected: dict | None = None) -> tuple[PyTree, dict]:
    """Read a file written by ``save_tree``: (tree of numpy arrays, header).

    With ``template`` (arrays or ``ShapeDtypeStruct``s), the leaves must match its paths,
    shapes and dtypes and come back in its structure; without, nested dicts are rebuilt from
    the stored paths. ``expected`` holds header entries that must be equal (fingerprint,
    batch size, …; a ``provenance`` is compared as ``jaxsgd.engine.provenance.differences``
    does). Every problem is a ``CheckpointError`` saying what to do.
    """
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            header = json.loads(str(npz["meta"]))
            leaves = [npz[f"leaf_{i:05d}"] for i in range(len(header["leaves"]))]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile,
            json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{str(path)!r} is unreadable ({type(e).__name__}: {e}); it may be damaged or "
            "written by an older jaxsgd: delete it to restart that batch size from its "
            "beginning") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r}: format {header.get('format')!r}, this jaxsgd "
                              f"reads format {FORMAT}; {_RERUN}")
    for key, value in (expected or {}).items():
        if key == "provenance":
            what = "; ".join(differences(header.get(key) or {}, value, where="the checkpoint"))
        else:
            what = (f"{key} is {value!r} here but {header.get(key)!r} in the checkpoint"
                    if header.get(key) != value else "")
        if what:
            raise CheckpointError(f"checkpoint {str(path)!r} belongs to a different sweep: "
                                  f"{what}")
    if template is None:
        return _rebuild([(row[0], leaf) for row, leaf in zip(header["leaves"], leaves)]), header
    want = _leaf_table(template)
    if header["leaves"] != want:
        bad = next(((h, w) for h, w in zip(header["leaves"], want) if h != w),
                   (len(header["leaves"]), len(want)))
        raise CheckpointError(f"checkpoint {str(path)!r} does not match this sweep's state "
                              f"(checkpoint has {bad[0]}, the sweep needs {bad[1]})")
    return jax.tree.unflatten(jax.tree.structure(template), leaves), header


def save_checkpoint(path: Path, state: PyTree, meta: dict) -> None:
    """Write a group's host ``state`` (numpy leaves, all runs) and ``meta`` atomically."""
    save_tree(path, state, meta)


def load_checkpoint(path: Path, template: PyTree, expected: dict) -> tuple[PyTree, dict]:
    """Read a checkpoint into the structure of ``template``; ``expected`` header entries
    (fingerprint, batch size, number of runs) must match. Returns (state, header)."""
    return load_tree(path, template, expected)


# --------------------------------------------------------------------------- the folder


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, sort_keys=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def open_output(out: str | os.PathLike, config: SweepConfig, provenance: dict,
                overwrite: bool = False) -> Path:
    """Open the results folder of a sweep, new or resumed.

    * missing or empty: created, with ``config.json`` and ``sweep.json`` (format, provenance);
    * holding the same sweep (same format, no ``differences`` of provenance): returned as it
      is, to resume;
    * holding a different sweep, or one written in another format: refused (``FileExistsError``
      saying what differs), unless ``overwrite``, which empties it;
    * anything else that is not empty: refused, whatever ``overwrite`` says.

    In a multi-process sweep every process makes the checks (so all raise the same error),
    then process 0 alone changes the folder while the others wait.
    """
    out = Path(out)
    replace = False
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / CONFIG_FILE).is_file():
            raise FileExistsError(f"refusing to use {str(out)!r}: it is not empty and not a "
                                  f"jaxsgd results folder (no {CONFIG_FILE})")
        replace = overwrite
        stored = _stored(out)
        difference = (f"it was written in folder format {stored.get('format')!r}, this jaxsgd "
                      f"writes format {FORMAT}" if stored.get("format") != FORMAT else
                      "; ".join(differences(stored.get("provenance", {}), provenance)))
        if difference and not overwrite:
            raise FileExistsError(
                f"results folder {str(out)!r} holds a different sweep ({difference}); choose "
                "another folder or pass overwrite=True (--overwrite) to replace it")
        before = stored.get("provenance", {}).get("runtime")
        if not difference and before and before != provenance.get("runtime"):
            warnings.warn(
                f"resuming {str(out)!r} on {runtime_text(provenance['runtime'])}; it was "
                f"started on {runtime_text(before)}: runs continued here differ from "
                "uninterrupted ones by float rounding (README, Reproducibility)",
                RuntimeWarning, stacklevel=3)
    barrier("jaxsgd-output-checked")
    if is_main_process():
        if replace:
            shutil.rmtree(out)
        if not out.exists() or not any(out.iterdir()):
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / CONFIG_FILE, config.to_dict())
            _write_json(out / SWEEP_FILE, {"format": FORMAT, "provenance": provenance})
    barrier("jaxsgd-output-ready")
    return out


def _stored(folder: Path) -> dict:
    """The folder's ``sweep.json``; {} if missing or unreadable."""
    try:
        stored = json.loads((folder / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def save_group(out: Path, ds: xr.Dataset, params: PyTree) -> None:
    """Write one finished batch-size group: parameters, then metrics (each atomically; the
    metrics file marks the group finished)."""
    b = int(ds.batch_size.values[0])
    save_tree(params_file(out, b), params, {"batch_size": b})
    atomic_write(group_file(out, b), lambda tmp: ds.to_netcdf(tmp, engine="netcdf4"))


def runs_template(params_like: PyTree, num_runs: int) -> PyTree:
    """Shapes of a group's final parameters: ``params_like``'s leaves with a leading [runs]."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((num_runs, *np.shape(s)), s.dtype),
                        params_like)


def load_group(path: Path, batch_size: int,
               params_like: PyTree | None = None) -> tuple[xr.Dataset, PyTree]:
    """Metrics and final parameters of one finished group of a results folder (no pickle).

    With ``params_like`` (one run's parameters or their shapes) the parameters come back in
    exactly that structure (tuples, lists, a flax.nnx or equinox state, …) with a leading
    [runs] axis; without, as nested dicts and lists rebuilt from the stored paths.
    """
    with xr.open_dataset(group_file(path, batch_size), engine="netcdf4") as ds:
        ds = ds.load()
    template = None
    if params_like is not None:
        template = runs_template(params_like, int(ds["run"].max()) + 1)
    params, _ = load_tree(params_file(path, batch_size), template)
    return ds, params


def load_sweep(path: str | os.PathLike, *, model: Any = None,
               params_like: PyTree | None = None) -> SweepResult:
    """Load a results folder written by ``run_sweep`` (possibly partial: finished groups only).

    Parameters come back as nested dicts and lists rebuilt from the stored leaf paths, or,
    given the sweep's ``model`` (a ``Model``: its ``init`` is traced for shapes, nothing is
    computed) or ``params_like`` (one run's parameters or their shapes), in exactly that
    structure, so a user model's own ``loss_fn`` accepts them; a template that does not match
    the stored leaves is refused (``CheckpointError`` naming the first difference).
    ``result.metrics.attrs["complete"]`` tells whether every batch size of the config is there.
    A folder written in another format is refused (``CheckpointError``) with what to do.
    """
    if model is not None and params_like is None:
        params_like = jax.eval_shape(model.init, jax.random.key(0))
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a jaxsgd results folder (no {CONFIG_FILE})")
    stored = _stored(path)
    if stored.get("format") != FORMAT:
        raise CheckpointError(f"results folder {str(path)!r} was written in folder format "
                              f"{stored.get('format', 1)!r}; this jaxsgd reads format {FORMAT}: "
                              f"{_RERUN}")
    config = SweepConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    groups, params = [], {}
    for file in sorted(path.iterdir()):
        match = _GROUP_RE.match(file.name)
        if match:
            ds, params[int(match.group(1))] = load_group(path, int(match.group(1)), params_like)
            groups.append(ds)
    if not groups:
        raise FileNotFoundError(f"{str(path)!r} holds no finished batch-size group yet")
    metrics = combine(groups)
    metrics.attrs["complete"] = int(sorted(params) == sorted(config.batch_sizes))
    return SweepResult(config=config, metrics=metrics, params=params,
                       provenance=stored.get("provenance"), snapshots=snapshot_files(path))
