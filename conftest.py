"""Test-session settings shared by the unit tests and the nbval notebook runs."""

import os
from pathlib import Path

# Notebooks executed by nbval (and any test) write figures and build products here, not over
# the committed reference figures. The kernels nbval starts inherit this environment.
_build = Path(__file__).resolve().parent / "build" / "test"
os.environ.setdefault("CRYOORIENT_FIGURES", str(_build / "figures"))
os.environ.setdefault("CRYOORIENT_BUILD", str(_build))
os.environ.setdefault("MPLBACKEND", "Agg")
