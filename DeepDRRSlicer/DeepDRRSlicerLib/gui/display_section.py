"""What a render shows in the panel: a status line (stage, size, time) and the stage selector,
in which the stages the last render did not compute are greyed out.

The combo box lists ``DeepDRRSlicerLib.mrml.stages.KNOWN_STAGES`` in order (the
module file's ``FluoroStage`` enum mirrors that tuple, and a test checks it).
"""

from __future__ import annotations

from slicer.i18n import tr as _

from ..mrml.stages import KNOWN_STAGES
from .panel import PanelSection

__all__ = ["DisplaySection", "enable_stage_choices", "physics_summary", "render_message"]


def enable_stage_choices(combo_box, computed_stages) -> None:
    """Enable the items of ``combo_box`` (in ``KNOWN_STAGES`` order) whose stage was computed."""
    model = combo_box.model()
    if not hasattr(model, "item"):
        return
    for index, stage in enumerate(KNOWN_STAGES):
        item = model.item(index)
        if item is not None:
            item.setEnabled(stage in computed_stages)


def render_message(output, wanted_stage=None) -> str:
    """One line on a render: its stage, size, kind and time, and whether the wanted stage was missing."""
    height, width = output.geometry.shape
    kind = _("preview") if output.preview else _("full resolution")
    message = _("{stage}: {width} x {height} px ({kind}) in {seconds:.2f} s").format(
        stage=output.display_stage, width=width, height=height, kind=kind, seconds=output.seconds)
    if wanted_stage is not None and wanted_stage != output.display_stage:
        message += " " + _("('{wanted}' is not computed with these settings: the Image, Metal or Stages choice "
                           "excludes it)").format(wanted=wanted_stage)
    metrics = getattr(getattr(output, "result", None), "metrics", None) or {}
    for text in physics_summary(metrics):
        message += " · " + text
    return message


def physics_summary(metrics: dict) -> list:
    """Short texts for the status line: scatter-to-primary ratio and photons per pixel (see pipeline metrics)."""
    texts = []
    if metrics.get("spr_center") is not None:
        scatter = metrics.get("scatter") or {}
        if "relative_error_median" in scatter:
            texts.append(_("SPR {spr:.2f} (MC ±{error:.0%})").format(spr=metrics["spr_center"],
                                                                    error=scatter["relative_error_median"]))
        else:
            texts.append(_("SPR {spr:.2f} (scatter of the last still pose)").format(spr=metrics["spr_center"]))
    if metrics.get("photons_per_pixel_median_in_body") is not None:
        texts.append(_("{photons:.0f} photons/pixel at {mas:g} mAs").format(
            photons=metrics["photons_per_pixel_median_in_body"], mas=metrics.get("mas", 0.0)))
    return texts


class DisplaySection(PanelSection):
    def rendered(self, output) -> None:
        parameters = self.context.parameters()
        message = render_message(output, parameters.stage.value if parameters else None)
        warnings = list(getattr(output, "warnings", []))
        # a warning (e.g. a CT not in HU, a blank image) leads, in red: the image alone would not say it
        self.context.status.show(" · ".join([*warnings, message]), error=bool(warnings))
        enable_stage_choices(self.ui.stageComboBox, output.stages)
