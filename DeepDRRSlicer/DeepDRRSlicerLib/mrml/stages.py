"""Names of the simulation stages the module can show (standard library only).

The engine decides which stages it computes (``SimulationResult.stages``):
"primary", "scatter", "total", "noisy" and "final" as chosen in its
settings, "spr" and "scatter_relative_error" with the scatter, and one
"line_integral_<material>" per material ("line_integral" in line-integral
mode). Every material of the shipped density models (calibrated and DeepDRR
bases) and implant metals has its stage here (a test checks it); materials a
user registers are written as nodes but not listed. The selector greys out
what the last render did not compute.
"""

from __future__ import annotations

__all__ = ["KNOWN_STAGES", "stage_title"]

#: Stage names in selector order. The Slicer module's ``FluoroStage`` enum mirrors this (a test checks it).
KNOWN_STAGES = (
    "primary",
    "scatter",
    "total",
    "noisy",
    "final",
    "spr",
    "scatter_relative_error",
    "line_integral",
    "line_integral_air",
    "line_integral_lung",
    "line_integral_adipose",
    "line_integral_water",
    "line_integral_soft_tissue",
    "line_integral_bone",
    "line_integral_titanium_alloy",
    "line_integral_stainless_steel",
    "line_integral_cobalt_chromium",
)

_TITLES = {
    "primary": "primary (I/I0)",
    "scatter": "scatter (I/I0, Monte Carlo)",
    "total": "total (primary + scatter)",
    "noisy": "noisy (one detector frame)",
    "final": "final (-log, windowed)",
    "spr": "scatter-to-primary ratio",
    "scatter_relative_error": "scatter relative error (Monte Carlo)",
    "line_integral": "line integral, all materials (g/cm2)",
}


def stage_title(stage: str) -> str:
    """Human-readable name of a stage, used in node names and in the stage selector."""
    if stage in _TITLES:
        return _TITLES[stage]
    if stage.startswith("line_integral_"):
        return f"line integral, {stage[len('line_integral_'):].replace('_', ' ')} (g/cm2)"
    return stage.replace("_", " ")
