"""Small helpers every layer shares: argument checks, pytree paths, hashing, atomic files.

This module sits below every other one and imports no other jaxsgd module (JAX only inside
the functions that need it, so the command line's help stays free of JAX).
"""

from __future__ import annotations

import hashlib
import operator
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

PyTree = Any


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None,
              unit: str = "") -> int:
    """``value`` as an int, or a one-line ``ValueError`` naming ``name`` and the bad value.

    Accepts Python and NumPy integers (not bools) in [minimum, maximum]; ``unit`` ("optimizer
    steps", "examples") is added to the message.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        suffix = f" ({unit})" if unit else ""
        raise ValueError(f"{name}: {value!r} is not an integer {bound}{suffix}")
    return number


USER_PART = "user:"  # prefix of the recorded name of a user's own optimizer or loss


def user_part_name(part: Callable) -> str:
    """The name a user's own part (optimizer factory, loss) is recorded under in a sweep's
    configuration: ``"user:"`` + its qualified name (``user:lion``, ``user:<lambda>``)."""
    name = getattr(part, "__qualname__", None) or type(part).__qualname__
    return USER_PART + name


def is_user_part(name: Any) -> bool:
    """Whether a configured optimizer or loss name records a user's own part."""
    return isinstance(name, str) and name.startswith(USER_PART)


def key_name(entry: Any) -> str:
    """The plain name of one pytree path entry: a dict key, a sequence index, an attribute."""
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def leaf_paths(tree: PyTree) -> list[tuple[str, ...]]:
    """Each leaf's path as plain names, in ``jax.tree`` order: ``("params", "Dense_0", "kernel")``."""
    import jax

    return [tuple(key_name(k) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def batch_size(batch: PyTree) -> int:
    """The leading (example) axis shared by every leaf of a batch; ``ValueError`` if they differ."""
    import jax

    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"batch: leaves need one shared leading example axis, got sizes "
                         f"{sorted(sizes, key=str)}")
    return sizes.pop()


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes (hex)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_mode() -> int:
    """The permissions a new file gets here: 0o666 less the process's umask (as ``open``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None],
                 mode: int | None = None) -> None:
    """Write a file so that readers see the old one or the whole new one, never a part.

    ``write(tmp)`` fills a temporary file ``tmp`` (a ``Path``) beside ``path``; it is then
    flushed to disk (fsync), given ``mode`` (default: as the umask allows, like any new file;
    ``mkstemp`` alone would make it owner-only) and renamed over ``path``. Creates the parent
    folder; removes the temporary file if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to exactly ``path`` (given a name, NumPy would append ".npz")."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# --------------------------------------------------------------------------- lazy references

PACKAGE_DIR = Path(__file__).resolve().parent


def resolve(target: str) -> Any:
    """The object named by ``"package.module:attribute"`` (imports the module)."""
    import importlib

    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def signature_text(target: str | Callable, skip: tuple[str, ...] = ()) -> str:
    """'a=1, b=2.0, path (required)': the keyword arguments of a function, or of the function
    named by ``"jaxsgd.module:function"``, read from its source file *without importing it*
    (so the command line's help text does not start JAX)."""
    if callable(target):
        import inspect

        pairs = [(name, None if p.default is p.empty else repr(p.default))
                 for name, p in inspect.signature(target).parameters.items()]
    else:
        pairs = _source_arguments(target)
    out = [f"{name} (required)" if default is None else f"{name}={default}"
           for name, default in pairs if name not in skip]
    return ", ".join(out) or "(none)"


def _source_arguments(target: str) -> list[tuple[str, str | None]]:
    """[(name, default source or None)] of the function ``"jaxsgd.module:function"``, by ast."""
    import ast

    module, _, name = target.partition(":")
    parts = module.split(".")
    if parts[0] != "jaxsgd":
        raise ValueError(f"{target!r}: only jaxsgd's own functions are read without importing")
    path = PACKAGE_DIR.joinpath(*parts[1:]).with_suffix(".py")
    tree = ast.parse(path.read_text())
    function = next(node for node in tree.body
                    if isinstance(node, ast.FunctionDef) and node.name == name)
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = [*zip(positional, defaults), *zip(args.kwonlyargs, args.kw_defaults)]
    return [(arg.arg, None if default is None else ast.unparse(default))
            for arg, default in pairs]
