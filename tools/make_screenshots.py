"""Screenshots of the module's Fluoro layout, rendered by Slicer's own view code (no Qt).

    .venv/bin/python tools/make_screenshots.py [--out Resources/Screenshots] [--pixels 384]

Loads the bundled pelvis CT and its landmarks into a scene with Slicer's
readers, runs the module logic (``DeepDRRLogic.simulate``) for three poses and
renders what the user sees with the views harness of the test suite
(``Testing/Views/slicer_views.py``: ``vtkMRMLSliceLogic`` and Slicer's slice-view
and 3D-view displayable managers on offscreen VTK windows). The CT is shown in
3D by volume rendering, as a user would switch it on.

Writes, into ``--out``:

* ``slicer_<pose>.png`` for the poses AP, lateral (alpha = 90) and oblique: the 3D view
  (CT, landmarks, C-arm source, detector outline, beam, the image on the detector) beside the
  Fluoro view (the displayed stage, with the projected landmarks);
* ``fluoro_stages.png``: the Fluoro view of the AP pose once per stage the engine computed,
  each captioned with its name.

Every stage the result has is shown, so the pictures follow the engine as it
gains stages. Rerun it whenever the images change. Needs an offscreen OpenGL
context (``python Testing/Views/slicer_views.py --probe``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing" / "Views"))
sys.path.insert(0, str(REPO / "Testing" / "MRML"))

POSES = {
    # name: (alpha, beta, title)
    "ap": (0.0, 0.0, "AP (alpha 0, beta 0)"),
    "lateral": (90.0, 0.0, "lateral (alpha 90, LAO)"),
    "oblique": (30.0, 15.0, "oblique (alpha 30 LAO, beta 15 cranial)"),
}
#: Like the demo (scripts/demo.sh): the angiography preset's 40 x 30 cm panel at its usual distances, the
#: isocentre 3 cm above the landmarks' centroid, so the whole bony pelvis is in view and no pixel is truncated.
DETECTOR = "angio-30x40"
ISOCENTER_RAS = (-3.0, 164.0, 205.0)
#: Camera of the 3D view for each pose: direction from the scene's centre (RAS), left-anterior-above.
CAMERA = {"ap": (-0.55, 1.0, 0.45), "lateral": (-1.0, 0.45, 0.45), "oblique": (-0.8, 1.0, 0.5)}


def _caption(picture: np.ndarray, text: str) -> np.ndarray:
    """The picture with a caption strip on top (annotation of the screenshot, not part of the view)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = 28
    image = Image.new("RGB", (picture.shape[1], picture.shape[0] + strip), (32, 32, 32))
    image.paste(Image.fromarray(picture), (0, strip))
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.text((8, 5), text, fill=(235, 235, 235), font=font)
    return np.asarray(image)


def _save(path: Path, picture: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(picture).save(path, optimize=True)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
          f"({picture.shape[1]} x {picture.shape[0]})")


def make_screenshots(out_dir: Path, pixels: int, view_px: int) -> list[Path]:
    from views_helpers import offscreen_problem

    problem = offscreen_problem()
    if problem is not None:
        raise SystemExit(f"error: cannot render offscreen: {problem}")

    from mrml_helpers import read_ct, read_landmarks
    from slicer_views import FluoroLayout

    from DeepDRRSlicerLib.geometry import DETECTOR_PRESETS, CArm
    from DeepDRRSlicerLib.mrml import layout
    from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic
    from DeepDRRSlicerLib.mrml.stages import stage_title
    from DeepDRRSlicerLib.pipeline import SimulationSettings

    out_dir.mkdir(parents=True, exist_ok=True)
    views = FluoroLayout(fluoro_size=(view_px, view_px), three_d_size=(round(view_px * 1.15), view_px))
    scene = views.scene
    ct = read_ct(scene, "pelvis_ct_3mm")
    ct.CreateDefaultDisplayNodes()
    landmarks = read_landmarks(scene, "pelvis landmarks")
    logic = DeepDRRLogic(scene, settings=SimulationSettings())   # the default settings and projector
    preset = DETECTOR_PRESETS[DETECTOR]
    width, height, spacing = preset.sampled(pixels)
    views.app.show_volume_rendering(ct)
    views.three_d.view_node.SetBoxVisible(False)
    views.three_d.view_node.SetAxisLabelsVisible(False)

    written = []
    for name, (alpha, beta, title) in POSES.items():
        started = time.perf_counter()
        carm = CArm(alpha_deg=alpha, beta_deg=beta, sid_mm=preset.sid_mm, sod_mm=preset.sod_mm,
                    isocenter_ras=ISOCENTER_RAS, width=width, height=height, pixel_spacing_mm=spacing)
        output = logic.simulate(ct, carm, landmarks)
        views.fit()
        views.fluoro.render()   # updates the image drawn on the detector plane in 3D
        views.three_d.look_from(CAMERA[name])
        three_d = views.three_d.render()
        fluoro = views.fluoro.render()
        gap = np.full((view_px, 4, 3), 40, dtype=np.uint8)
        picture = _caption(np.hstack([three_d, gap, fluoro]),
                           f"{title}: 3D view | Fluoro view, {stage_title(output.display_stage)}")
        path = out_dir / f"slicer_{name}.png"
        _save(path, picture)
        written.append(path)
        print(f"   {name}: simulated and rendered in {time.perf_counter() - started:.1f} s "
              f"({output.result.backend}, stages: {', '.join(output.stages)})")

        if name == "ap":
            tiles = []
            for stage in output.stages:  # what the stage selector does (DeepDRRLogic.show_stage)
                layout.show_in_fluoro_view(scene, output.node(stage), output.geometry, fit=False)
                tiles.append(_caption(views.fluoro.render(), stage_title(stage)))
            layout.show_in_fluoro_view(scene, output.node(), output.geometry, fit=False)
            columns = int(np.ceil(np.sqrt(len(tiles))))
            blank = np.full_like(tiles[0], 40)
            rows = [np.hstack(tiles[i:i + columns] + [blank] * (columns - len(tiles[i:i + columns])))
                    for i in range(0, len(tiles), columns)]
            path = out_dir / "fluoro_stages.png"
            _save(path, np.vstack(rows))
            written.append(path)
    views.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "Resources" / "Screenshots", help="output folder")
    parser.add_argument("--pixels", type=int, default=384, help="detector pixels along the panel's longer side")
    parser.add_argument("--view-size", type=int, default=512, help="height of each view in screen pixels")
    args = parser.parse_args(argv)
    make_screenshots(args.out, args.pixels, args.view_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
