"""Checkpoints of a running batch-size group, and the fingerprint that guards resuming.

A checkpoint is one ``.npz`` file holding every leaf of the group's ``RunState`` (all runs,
without device padding: ``leaf_00000``, ``leaf_00001``, … in ``jax.tree`` order) and a JSON
header (``meta``: format, fingerprint, batch size, next step, chunk length, and the path, shape
and dtype of each leaf). It is written to a temporary file, flushed to disk and renamed, so a
process killed at any moment leaves either the previous checkpoint or the new one, never half
of one. Loading uses ``allow_pickle=False`` and checks the header against the sweep being run;
any mismatch or damage is a ``CheckpointError`` saying what differs and what to do.

The fingerprint of a sweep (``sweep_fingerprint``) covers everything that determines its
results: the configuration, the data set's bytes, the model's parameter shapes and the probes.
A results folder records it in ``sweep.json``; a different sweep pointed at the folder is
refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

PyTree = Any
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint or results folder that cannot be resumed; the message says why."""


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes (hex)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def sweep_fingerprint(config_dict: dict, data, params_shape: PyTree, probes: Sequence) -> dict:
    """What a resumed sweep must share with the folder's: JSON-ready dict of named parts."""
    shapes = [f"{jax.tree_util.keystr(p)}:{tuple(l.shape)}:{l.dtype}"
              for p, l in jax.tree_util.tree_flatten_with_path(params_shape)[0]]
    return {
        "config": config_dict,
        "data": array_digest(data.x_train, data.y_train, data.x_test, data.y_test),
        "model": hashlib.sha256("\n".join(shapes).encode()).hexdigest(),
        "probes": [[p.name, p.every, *([dict(p.options)] if p.options else [])]
                   for p in probes],
    }


def fingerprint_difference(stored: dict, current: dict) -> str | None:
    """A readable account of how two fingerprints differ, or None if they are equal."""
    if stored == current:
        return None
    parts = []
    old_cfg, new_cfg = stored.get("config", {}), current.get("config", {})
    for section in sorted(set(old_cfg) | set(new_cfg)):
        a, b = old_cfg.get(section, {}), new_cfg.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                parts.append(f"{section}.{key} is {b.get(key)!r} here but "
                             f"{a.get(key)!r} in the folder")
    for name, what in (("data", "the data set differs"),
                       ("model", "the model's parameter shapes differ"),
                       ("probes", "the probes differ")):
        if stored.get(name) != current.get(name):
            parts.append(what)
    return "; ".join(parts) or "the sweep differs"


def _leaf_table(tree: PyTree) -> list[list]:
    """[path, shape, dtype] of each leaf (arrays or ``ShapeDtypeStruct``s)."""
    return [[jax.tree_util.keystr(p), list(l.shape), str(np.dtype(l.dtype))]
            for p, l in jax.tree_util.tree_flatten_with_path(tree)[0]]


def save_checkpoint(path: Path, state: PyTree, meta: dict) -> None:
    """Write host ``state`` (numpy leaves) and ``meta`` atomically to ``path``."""
    state = jax.tree.map(np.asarray, state)
    leaves = jax.tree.leaves(state)
    header = dict(meta, format=FORMAT, leaves=_leaf_table(state))
    arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.asarray(json.dumps(header)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: Path, template: PyTree, expected: dict) -> tuple[PyTree, dict]:
    """Read a checkpoint into the structure of ``template`` (host or shape leaves).

    ``expected`` holds header entries that must match (fingerprint, batch size, number of
    runs). Returns (state with numpy leaves, header). Never unpickles.
    """
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            header = json.loads(str(npz["meta"]))
            leaves = [npz[f"leaf_{i:05d}"] for i in range(len(header["leaves"]))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable ({type(e).__name__}: {e}); it may be "
            "damaged: delete it to restart that batch size from its beginning") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r}: format {header.get('format')!r}, "
                              f"this jaxsgd reads format {FORMAT}")
    for key, value in expected.items():
        if header.get(key) != value:
            what = (fingerprint_difference(header.get(key) or {}, value) if key == "fingerprint"
                    else f"{key} is {value!r} here but {header.get(key)!r} in the checkpoint")
            raise CheckpointError(f"checkpoint {str(path)!r} belongs to a different sweep: "
                                  f"{what}")
    want = _leaf_table(template)
    if header["leaves"] != want:
        bad = next(((h, w) for h, w in zip(header["leaves"], want) if h != w),
                   (len(header["leaves"]), len(want)))
        raise CheckpointError(f"checkpoint {str(path)!r} does not match this sweep's state "
                              f"(checkpoint has {bad[0]}, the sweep needs {bad[1]})")
    return jax.tree.unflatten(jax.tree.structure(template), leaves), header
