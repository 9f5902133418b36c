"""The README's Python examples run as written (issue 12).

Every ```python block of the README runs, in order, in one fresh Python process (as a reader
would paste them), in an empty folder. Two numbers change, so that the test takes seconds, not
minutes: sweeps train on 1/8 of their budget (a wrapper around ``jaxsgd.run_sweep``), and so the
critical batch size is asked at a training loss those short runs reach (a wrapper around
``jaxsgd.critical_batch_size``). Every call, argument and attribute is the README's own.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = textwrap.dedent("""
    import jaxsgd
    _run_sweep = jaxsgd.run_sweep

    def _shorter(config, *args, **kwargs):  # the README's sweeps on 1/8 of their budget
        budget = config.budget // 8
        every = config.eval_every and min(config.eval_every, budget)
        return _run_sweep(config.replace(budget=budget, eval_every=every), *args,
                          progress=False, **kwargs)

    jaxsgd.run_sweep = _shorter
    _critical_batch_size = jaxsgd.critical_batch_size

    def _reachable(result, target, **kwargs):  # a loss every batch size of the short runs reaches
        final = result.metrics[kwargs["metric"]].isel({result.config.eval_dim: -1})
        reached = float(final.min([d for d in final.dims if d != "batch_size"]).max())
        return _critical_batch_size(result, max(target, 1.1 * reached), **kwargs)

    jaxsgd.critical_batch_size = _reachable
""")

# Checks after the README's code: what it promises holds.
EPILOGUE = textwrap.dedent("""
    import numpy as np
    assert again.config.optimizer == "user:<lambda>", again.config.optimizer
    assert again.config.loss == "user:smoothed_cross_entropy", again.config.loss
    assert np.isfinite(float(top.eigenvalues[0])) and float(tr.trace) > 0
    assert float(eps.sharpness) >= 0 and np.isfinite(float(ns.b_simple))
    assert "lambda_max" in table and table.lambda_max.notnull().all()
    print("README OK")
""")


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_examples():
    blocks = readme_blocks()
    assert len(blocks) >= 4
    assert any("optimizer=lambda hp" in b for b in blocks)


def test_readme_examples_run_as_written(tmp_path):
    script = tmp_path / "readme.py"
    script.write_text(PRELUDE + "\n".join(readme_blocks()) + EPILOGUE)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "README OK" in done.stdout
