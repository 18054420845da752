"""Monte Carlo scatter stage: photon transport through the CT's materials to the detector.

``simulate_scatter`` / ``ScatterTransport`` (monte_carlo.py) set up the tables
and run the compiled kernel (kernel_cpu.py, numba); ``denoise`` smooths the
tallies. Results are in the analytic primary's units (keV absorbed per mAs per
pixel).
"""

from .monte_carlo import ScatterResult, ScatterSettings, ScatterTransport, simulate_scatter

__all__ = ["ScatterResult", "ScatterSettings", "ScatterTransport", "simulate_scatter"]
