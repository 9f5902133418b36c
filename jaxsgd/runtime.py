"""The one place jaxsgd touches JAX's global settings, and only when asked: ``use_cpu_devices``.

``import jaxsgd`` changes nothing in JAX. Scripts that want jaxsgd's measured defaults call
``jaxsgd.use_cpu_devices()`` in their first lines, *before any JAX computation*; the ``jaxsgd``
command, the experiment scripts, the benchmarks and the README's examples do. It sets

* the CPU device count: ``CPU_DEVICES_PER_CORE`` (4) devices per usable core. XLA's CPU backend
  exposes one device unless told otherwise, which leaves cores idle for many small per-run
  computations; several device programs per core keep the cores busy between the small
  operations of one (a small-batch step is a chain of small matmuls). Measured on 2 cores (MLP
  40-256-256-10, 16 runs, steady state, µs per run-step): B = 16: 1 device 555, 2 devices 324,
  4: 324, 6: 260, 8: 232, 16: 271; B = 256: 2 devices 2479, 8: 2315; B = 1024: 2 devices 9368,
  8: 8457. A choice the user already made is kept: ``JAX_NUM_CPU_DEVICES``, ``XLA_FLAGS=
  --xla_force_host_platform_device_count=N`` or ``jax.config.update("jax_num_cpu_devices", N)``;
  ``JAXSGD_CPU_DEVICES=N`` (or ``count=N``) overrides jaxsgd's choice. Only the CPU backend is
  affected: on a GPU or TPU machine the accelerators are used as they are;
* JAX's persistent compilation cache at ``$JAXSGD_CACHE/xla`` (default ``~/.cache/jaxsgd/xla``),
  unless a cache folder is already set, caching every program (a group's small init/finish
  programs take ~1 s to compile too): a one-group sweep at B = 16 took 12.7 s cold and 5.0 s
  the second time.

If JAX has already started, the device count can no longer change: ``use_cpu_devices`` then
warns (``RuntimeWarning``) naming the devices there are, and sweeps use those.
"""

from __future__ import annotations

import os
import warnings

from jaxsgd._util import check_int

CPU_DEVICES_PER_CORE = 4


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cache_folder() -> str:
    """jaxsgd's cache root: ``$JAXSGD_CACHE`` or ``~/.cache/jaxsgd`` (data sets, compiled code)."""
    return os.path.expanduser(os.environ.get("JAXSGD_CACHE")
                              or os.path.join("~", ".cache", "jaxsgd"))


def use_cpu_devices(count: int | None = None, *, compilation_cache: bool = True) -> int:
    """Choose the CPU device count and the compilation cache; call before JAX starts.

    Args:
      count: CPU devices to create; default ``$JAXSGD_CPU_DEVICES``, else 4 per usable core,
        unless the user already chose through JAX's own settings (then kept).
      compilation_cache: also point JAX's persistent compilation cache at
        ``$JAXSGD_CACHE/xla`` unless a cache folder is set already.

    Returns:
      the CPU device count asked of JAX (or already chosen by the user). Warns if JAX had
      already started with another count, which can then no longer change.

    Example::

      import jaxsgd
      jaxsgd.use_cpu_devices()        # first, before any JAX computation
    """
    import jax

    if compilation_cache and not jax.config.values.get("jax_compilation_cache_dir"):
        jax.config.update("jax_compilation_cache_dir", os.path.join(cache_folder(), "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    override = os.environ.get("JAXSGD_CPU_DEVICES")
    if count is None and override:
        try:
            count = int(override)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"JAXSGD_CPU_DEVICES: {override!r} is not a positive integer")
    if count is not None:
        check_int("count", count, unit="CPU devices")
    user_choice = _user_device_count(jax)
    if count is None and user_choice is not None:
        return user_choice
    wanted = count if count is not None else CPU_DEVICES_PER_CORE * usable_cores()
    try:
        jax.config.update("jax_num_cpu_devices", wanted)
    except RuntimeError:  # JAX has started: its backends are initialised
        have = len(jax.local_devices(backend="cpu"))
        if have != wanted and jax.default_backend() == "cpu":
            warnings.warn(
                f"jaxsgd.use_cpu_devices: JAX had already started with {have} CPU device(s), "
                f"so the {wanted} asked for cannot be created; sweeps use the {have} there "
                "are. Call use_cpu_devices() before any JAX computation (or set "
                "JAX_NUM_CPU_DEVICES) to choose.", RuntimeWarning, stacklevel=2)
    return wanted


def _user_device_count(jax) -> int | None:
    """The CPU device count the user chose through JAX's settings, or None."""
    if jax.config.jax_num_cpu_devices != -1:  # set in Python or by JAX_NUM_CPU_DEVICES
        return int(jax.config.jax_num_cpu_devices)
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in flags.split():
        if flag.startswith("--xla_force_host_platform_device_count="):
            return int(flag.split("=", 1)[1])
    return None
