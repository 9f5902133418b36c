"""The package's architecture: layers, no side effects on import, a JAX-free command-line help."""

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxsgd
from jaxsgd._util import resolve, signature_text

PACKAGE = Path(jaxsgd.__file__).resolve().parent

# Each module may import only modules of its own layer or a lower one (README, Architecture).
LAYERS = {
    "jaxsgd._util": 0, "jaxsgd.runtime": 0,
    "jaxsgd.config": 1, "jaxsgd.hyperparams": 1, "jaxsgd.targets": 1, "jaxsgd.losses": 1,
    "jaxsgd.optimizers": 1, "jaxsgd.style": 1, "jaxsgd.data": 1, "jaxsgd.models": 1,
    "jaxsgd.measure": 2,
    "jaxsgd.probes": 3,
    "jaxsgd.engine": 4,
    "jaxsgd.analysis": 5,
    "jaxsgd.theory": 6,
    "jaxsgd.cli": 7, "jaxsgd.experiment_cli": 7, "jaxsgd": 7,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS and the README")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> set[str]:
    """Every jaxsgd module named by an import anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("jaxsgd"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxsgd"):
            found.add(node.module)
            # `from jaxsgd.data import _cache`: a submodule imported by name
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if (PACKAGE.parent / node.module.replace(".", "/") / f"{a.name}.py")
                         .is_file())
    return found


def test_no_module_imports_a_higher_layer():
    violations = []
    for module, path in _modules():
        for imported in _imports(path):
            if _layer(imported) > _layer(module):
                violations.append(f"{module} (layer {_layer(module)}) imports {imported} "
                                  f"(layer {_layer(imported)})")
    assert not violations, "\n".join(violations)


def test_the_layering_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from jaxsgd.engine.sweep import run_sweep\n")
    assert _layer("jaxsgd.measure.noise") < max(_layer(m) for m in _imports(bad))


def test_no_private_jax_imports():
    offenders = [str(path) for _, path in _modules() if "jax._src" in path.read_text()]
    assert not offenders


def _fresh(code: str, env_drop=("JAX_NUM_CPU_DEVICES", "XLA_FLAGS", "JAXSGD_CPU_DEVICES"),
           **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in env_drop}
    return subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code],
                          env=base | env, capture_output=True, text=True, timeout=120)


def test_import_changes_no_jax_setting():
    code = """
import sys
import jax
names = ("jax_num_cpu_devices", "jax_compilation_cache_dir",
         "jax_persistent_cache_min_compile_time_secs")
before = {n: jax.config.values[n] for n in names}
import jaxsgd
from jaxsgd import SweepConfig, Grid
assert "jax" in sys.modules
after = {n: jax.config.values[n] for n in names}
assert before == after, (before, after)
print(jax.device_count())
"""
    done = _fresh(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"  # JAX's own default on CPU


def test_import_does_not_start_jax():
    done = _fresh("import sys, jaxsgd; print('jax' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("argv", [["--help"], ["sweep", "--help"], ["show", "--help"]])
def test_help_does_not_import_jax(argv):
    code = f"""
import sys
from jaxsgd.cli import main
try:
    main({argv!r})
except SystemExit as e:
    assert e.code == 0
assert 'jax' not in sys.modules, 'jax imported'
assert 'flax' not in sys.modules, 'flax imported'
"""
    done = _fresh(code)
    assert done.returncode == 0, done.stderr
    assert "[probes.NAME]" in done.stdout or argv == ["show", "--help"]


def test_use_cpu_devices_chooses_before_jax_starts():
    count = "import jaxsgd; jaxsgd.use_cpu_devices(); import jax; print(jax.device_count())"
    cores = len(os.sched_getaffinity(0))
    assert _fresh(count).stdout.strip() == str(4 * cores)
    assert _fresh(count, JAXSGD_CPU_DEVICES="3").stdout.strip() == "3"
    assert _fresh(count, JAX_NUM_CPU_DEVICES="5").stdout.strip() == "5"  # the user's choice
    cache = _fresh("import jaxsgd, jax; jaxsgd.use_cpu_devices(); "
                   "print(jax.config.values['jax_compilation_cache_dir'])", JAXSGD_CACHE="/c")
    assert cache.stdout.strip() == "/c/xla"
    # JAX already running: a warning (an error here, by -W) instead of pretending.
    late = _fresh("import jax; jax.numpy.ones(1).block_until_ready(); import jaxsgd; "
                  "jaxsgd.use_cpu_devices()", JAXSGD_CPU_DEVICES="3")
    assert "RuntimeWarning" in late.stderr and "JAX had already started" in late.stderr


def test_help_signatures_read_without_import_equal_the_real_ones():
    from jaxsgd.models.registry import FACTORIES, SHAPE_ARGUMENTS
    from jaxsgd.probes.registry import PROBES, PYTHON_ONLY

    for targets, skip in ((FACTORIES, SHAPE_ARGUMENTS), (PROBES, PYTHON_ONLY)):
        for target in targets.values():
            parameters = inspect.signature(resolve(target)).parameters.values()
            real = ", ".join(f"{p.name} (required)" if p.default is p.empty
                             else f"{p.name}={p.default!r}"
                             for p in parameters if p.name not in skip) or "(none)"
            assert signature_text(target, skip) == real


def test_every_public_name_is_importable_from_the_package():
    for name in jaxsgd.__all__:
        assert getattr(jaxsgd, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        jaxsgd.nonexistent  # noqa: B018


def test_measurement_functions_share_one_argument_convention():
    """What is measured is positional — (loss_fn, params, batch), then an operand such as
    hvp's vector — and every option is a keyword, the random key included (issue 12)."""
    import inspect

    import jaxsgd

    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    checked = 0
    for name in jaxsgd.__all__:
        fn = getattr(jaxsgd, name)
        if not inspect.isfunction(fn):
            continue
        parameters = inspect.signature(fn).parameters
        if "key" in parameters:
            assert parameters["key"].kind is inspect.Parameter.KEYWORD_ONLY, name
        names = [n for n, p in parameters.items() if p.kind in positional]
        if names[:1] == ["loss_fn"]:
            assert names[:3] == ["loss_fn", "params", "batch"], (name, names)
            operands = [parameters[n] for n in names[3:]]  # required, never an option
            assert all(p.default is inspect.Parameter.empty for p in operands), (name, names)
            checked += 1
    assert checked >= 15
