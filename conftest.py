"""Test-session settings shared by the unit tests and the nbval notebook runs."""

import os
from pathlib import Path

# Notebooks executed by nbval (and any test) write figures, results and build products here, not
# over the committed reference figures and paper/. The kernels nbval starts inherit this environment.
_build = Path(__file__).resolve().parent / "build" / "test"
os.environ.setdefault("CRYOORIENT_FIGURES", str(_build / "figures"))
os.environ.setdefault("CRYOORIENT_BUILD", str(_build))
os.environ.setdefault("CRYOORIENT_PAPER", str(_build / "paper"))
os.environ.setdefault("MPLBACKEND", "Agg")
# The paper's 5j0n map, when ../shared/data holds it (CI and developer machines); tests that need
# it skip when it cannot be found.
_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
if _shared.is_dir():
    os.environ.setdefault("CRYOORIENT_MAPS", str(_shared))
