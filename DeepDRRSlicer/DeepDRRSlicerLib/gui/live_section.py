"""The live link between the panel and the C-arm.

* Sliders -> transform: moving alpha or beta points the C-arm transform that way (a live view then
  re-renders from the transform's own event).
* Transform -> sliders: dragging the handles (or another module, or a script) moving the transform
  shows its angles on the sliders.
* Settings -> live view: a changed SID, detector, kVp, stage, landmarks... re-renders the live view;
  a different CT or transform stops it until Simulate is pressed again.
"""

from __future__ import annotations

import slicer
from slicer.i18n import tr as _

from .panel import PanelSection

__all__ = ["LiveSection"]


def _node_id(node):
    return node.GetID() if node is not None else None


class LiveSection(PanelSection):
    def __init__(self, context):
        super().__init__(context)
        self._syncing_from_pose = False

    def parameters_modified(self, parameters) -> None:
        if self._syncing_from_pose:  # the sliders are only showing the transform's pose
            return
        try:
            if parameters.carmTransform is not None:
                self.logic.setCArmAngles(parameters.carmTransform, parameters.alpha, parameters.beta)
            if not self.logic.isLive():
                return
            live_ct, live_transform, _landmarks = self.logic.lib.live_nodes()
            if (_node_id(parameters.ct), _node_id(parameters.carmTransform)) != (_node_id(live_ct),
                                                                                 _node_id(live_transform)):
                self.logic.stopLive()
                self.context.status.show(_("The CT or the C-arm transform changed: press Simulate."))
                return
            self.logic.updateLiveFromParameters(parameters)
        except Exception as error:  # e.g. SOD >= SID while a slider moves: say so, keep the last image
            self.context.status.show(str(error), error=True)

    def carm_moved(self, alpha, beta, roll, pose) -> None:
        parameters = self.context.parameters()
        if parameters is None:
            return
        self._syncing_from_pose = True
        try:
            with slicer.util.NodeModify(parameters):
                if abs(parameters.alpha - alpha) > 1e-3:
                    parameters.alpha = float(min(180.0, max(-180.0, alpha)))
                if abs(parameters.beta - beta) > 1e-3:
                    parameters.beta = float(min(90.0, max(-90.0, beta)))
        finally:
            self._syncing_from_pose = False
