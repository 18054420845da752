"""The memory estimate against what a render really takes, measured in a fresh process (Linux: peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.memory import (MemoryContext, MemoryItem, check_memory, estimate_memory,
                                     register_memory_term, _TERMS)

HERE = Path(__file__).resolve().parent

PROBE = r"""
import gc, json, sys
import numpy as np
sys.path.insert(0, sys.argv[5])
from pathlib import Path
from DeepDRRSlicerLib.geometry import CArm
from DeepDRRSlicerLib.landmarks import Landmark
from DeepDRRSlicerLib.memory import estimate_memory
from DeepDRRSlicerLib.output import write_result
from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator, render_memory_context
from DeepDRRSlicerLib.volume import Volume
from bad_inputs import phantom_hu

def status(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key))

pixels, side, mode, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
shape = (side, side, side)
volume = Volume.from_array(phantom_hu(shape), spacing=(1.0, 1.0, 1.0), origin=[-(side - 1) / 2] * 3)
settings = SimulationSettings(mode=mode)
marks = [Landmark("centre", (0.0, 0.0, 0.0))]
warm = Simulator(Volume.from_array(phantom_hu((8, 8, 8)), spacing=(1, 1, 1)), settings)   # compile the kernels
write_result(warm.render(CArm(width=8, height=8, pixel_spacing_mm=5).geometry(), landmarks=marks), out / "warm")
del warm
gc.collect()
geometry = CArm(width=pixels, height=pixels, pixel_spacing_mm=300.0 / pixels).geometry()
estimate = estimate_memory(render_memory_context(volume, settings, geometry.shape, writing=True, landmarks=True))
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")   # reset the peak (VmHWM) to the current RSS
before = status("VmRSS:")
write_result(Simulator(volume, settings).render(geometry, landmarks=marks), out / "run")
already_held = sum(item.bytes for item in estimate.items if item.name.startswith("CT voxels"))
print(json.dumps({"measured": status("VmHWM:") - before, "estimate": estimate.total - already_held}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc (Linux only)")
@pytest.mark.parametrize("pixels, side, mode", [(2048, 20, "polychromatic"), (1024, 20, "line-integral"),
                                                (384, 120, "polychromatic")],
                         ids=["large detector", "line integrals", "large CT"])
def test_estimate_covers_the_measured_peak_without_crying_wolf(tmp_path, pixels, side, mode):
    done = subprocess.run([sys.executable, "-c", PROBE, str(pixels), str(side), mode, str(tmp_path), str(HERE)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "clear_refs" in done.stderr:
        pytest.skip("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    measured, estimate = report["measured"], report["estimate"]
    assert estimate >= measured, f"estimate {estimate / 2**20:.0f} MB below the measured {measured / 2**20:.0f} MB"
    assert estimate <= 1.5 * measured + (16 << 20), (
        f"estimate {estimate / 2**20:.0f} MB is far above the measured {measured / 2**20:.0f} MB")


def test_the_16k_request_of_the_issue_is_estimated_at_about_15_gb():
    # 16384 x 16384 pixels of the bundled CT: the issue measured 14.6 GB taken silently.
    estimate = estimate_memory(MemoryContext((112, 101, 122), (16384, 16384), writing=True, landmarks=True))
    assert 14.6 * 2**30 <= estimate.total <= 1.3 * 14.6 * 2**30
    with pytest.raises(InputError) as error:
        check_memory(estimate, "Simulating 16384 x 16384 pixels", available=8 << 30)
    assert "more than the 8.0 GB of memory available" in error.value.problem and "--size" in error.value.fix
    assert "of memory available" in check_memory(estimate, "x", available=24 << 30)
    assert check_memory(estimate, "x", available=64 << 30) is None


def test_stages_can_add_their_memory():
    context = MemoryContext((100, 100, 100), (512, 512))
    base = estimate_memory(context).total

    def scatter(context):
        return [MemoryItem("scatter image", 4 * context.pixels), MemoryItem("scatter work", 10 << 20, held=False)]

    register_memory_term(scatter)
    try:
        extended = estimate_memory(context)
    finally:
        _TERMS.remove(scatter)
    assert extended.total == base + 4 * 512 * 512 + max(0, (10 << 20) - (estimate_memory(context).peak_item.bytes))


def test_a_transient_only_meets_what_is_held_by_its_step():
    from DeepDRRSlicerLib.memory import MemoryEstimate

    estimate = MemoryEstimate([MemoryItem("ct", 10), MemoryItem("network buffers", 100, held=False, step="materials"),
                               MemoryItem("stage images", 80, step="detector"),
                               MemoryItem("noise temporaries", 30, held=False, step="detector")])
    # materials: 10 + 100 = 110; detector: 10 + 80 + 30 = 120 -> the detector step is the worst moment
    assert estimate.total == 120 and estimate.peak_item.name == "noise temporaries"
    assert estimate.held_by("materials") == 10 and estimate.held_by("writing") == 90
    with pytest.raises(ValueError, match="unknown memory step"):
        MemoryItem("x", 1, step="later")
