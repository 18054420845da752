"""Engine tests: few Monte Carlo photons unless a test asks for more (the default is for users, not CI)."""

import os

os.environ.setdefault("DEEPDRR_SCATTER_PHOTONS", "5000")
