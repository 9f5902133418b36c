"""Probes by name, for configuration files: ``[probes.NAME]`` tables with the factory's options.

The registry names each factory by its import path, so listing the probes and their options
(the command line's help) imports neither the probes nor JAX.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from jaxsgd._util import resolve

PROBES: dict[str, str] = {
    "noise_scale": "jaxsgd.probes.noise:noise_scale_probe",
    "hessian_noise": "jaxsgd.probes.noise:hessian_noise_probe",
    "gradient_norm": "jaxsgd.probes.base:gradient_norm",
    "lambda_max": "jaxsgd.probes.curvature:lambda_max_probe",
}
# Factory arguments a configuration file cannot give: the name is the table's, and arrays (a
# fixed batch of data) belong to the Python API.
PYTHON_ONLY = ("name", "data")


def make_probe(name: str, options: Mapping[str, Any]):
    """The probe registered as ``name`` built with ``options``; ``ValueError`` naming an unknown
    probe or option (and listing the known ones), or a bad value."""
    if name not in PROBES:
        raise ValueError(f"[probes.{name}]: unknown probe {name!r}; known probes: "
                         f"{', '.join(PROBES)}")
    if not isinstance(options, Mapping):
        raise ValueError(f"[probes.{name}] must be a table of options")
    factory = resolve(PROBES[name])
    accepted = [k for k in inspect.signature(factory).parameters if k not in PYTHON_ONLY]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(f"[probes.{name}]: unknown option {unknown[0]!r}; accepted: "
                         f"{', '.join(accepted)}")
    defaults = inspect.signature(factory).parameters
    for key, value in options.items():
        if isinstance(value, (list, dict)) and not isinstance(defaults[key].default,
                                                              (list, tuple)):
            raise ValueError(f"[probes.{name}]: option {key!r} = {value!r} must be a single "
                             f"value, not a {type(value).__name__}")
    try:
        return factory(**options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"[probes.{name}]: {e}") from None
