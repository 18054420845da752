"""*Generate dataset*: pose ranges, count, stages and output folder; progress bar and Cancel.

The work is ``DeepDRRSlicerLib.mrml.dataset_logic.generate_dataset``, i.e. the
engine's generator (the same as ``deepdrr-slicer generate``). It runs on the
main thread and keeps the GUI responsive between images; Cancel stops after the
current image, and pressing *Generate dataset* again with the same settings
resumes where it stopped. The CT, landmarks, C-arm distances, detector size and
kVp come from the panel's own settings.
"""

from __future__ import annotations

import ctk
import qt

import slicer
from slicer.i18n import tr as _

from ..errors import InputError
from .panel import PanelSection

__all__ = ["DatasetSection"]


class DatasetSection(PanelSection):
    def setup(self) -> None:
        box = self.ui.datasetCollapsibleButton
        form = box.layout() if box.layout() is not None else qt.QFormLayout(box)
        self.out_edit = ctk.ctkPathLineEdit()
        self.out_edit.filters = ctk.ctkPathLineEdit.Dirs
        self.out_edit.settingKey = "DeepDRRSlicer/DatasetFolder"
        self.out_edit.toolTip = _("Folder of the dataset: new or empty, or the folder of a run to resume.")
        self.labels_selector = slicer.qMRMLNodeComboBox()
        self.labels_selector.nodeTypes = ["vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"]
        self.labels_selector.noneEnabled = True
        self.labels_selector.addEnabled = False
        self.labels_selector.removeEnabled = False
        self.labels_selector.setMRMLScene(slicer.mrmlScene)
        self.labels_selector.toolTip = _("Optional structures to project: each image gets their 2D masks and "
                                         "path lengths (mm).")
        self.alpha_range = self._range(-180, 180, -40, 40, _("Orbital angle range (LAO positive), degrees."))
        self.beta_range = self._range(-90, 90, -25, 25, _("Angulation range (cranial positive), degrees."))
        self.count_spin = qt.QSpinBox()
        self.count_spin.setRange(1, 10_000_000)
        self.count_spin.value = 100
        self.count_spin.toolTip = _("Number of images (poses drawn uniformly in the ranges).")
        self.jitter_edit = qt.QLineEdit("iso=10,roll=5")
        self.jitter_edit.toolTip = _("iso=MM: isocentre offset along each axis; roll=DEG: rotation about the beam.")
        self.randomize_edit = qt.QLineEdit("kvp=70:120")
        self.randomize_edit.toolTip = _("Physics drawn per image, e.g. kvp=70:120,filtration.Al=2:5 "
                                        "(A:B uniform, A:B:log, X|Y|Z).")
        self.stages_edit = qt.QLineEdit("primary")
        self.size_spin = qt.QSpinBox()
        self.size_spin.setRange(16, 2048)
        self.size_spin.value = 256
        self.size_spin.toolTip = _("Pixels per side (the panel's detector size is kept).")
        self.seed_spin = qt.QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.toolTip = _("The same seed and settings give the same dataset, byte for byte.")
        buttons = qt.QHBoxLayout()
        self.generate_button = qt.QPushButton(_("Generate dataset"))
        self.cancel_button = qt.QPushButton(_("Cancel"))
        self.cancel_button.enabled = False
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = qt.QProgressBar()
        self.progress_bar.visible = False
        self.result_label = qt.QLabel()
        self.result_label.wordWrap = True
        self.result_label.textInteractionFlags = qt.Qt.TextSelectableByMouse
        for label, widget in ((_("Output folder:"), self.out_edit), (_("Structures:"), self.labels_selector),
                              (_("Orbital angle α:"), self.alpha_range), (_("Angulation β:"), self.beta_range),
                              (_("Images:"), self.count_spin), (_("Pose jitter:"), self.jitter_edit),
                              (_("Randomise physics:"), self.randomize_edit), (_("Stages:"), self.stages_edit),
                              (_("Image size (px):"), self.size_spin), (_("Seed:"), self.seed_spin)):
            form.addRow(label, widget)
        form.addRow(buttons)
        form.addRow(self.progress_bar)
        form.addRow(self.result_label)
        self.generate_button.connect("clicked(bool)", self.on_generate)
        self.cancel_button.connect("clicked(bool)", self.on_cancel)
        self._cancel_requested = False
        self._running = False

    @staticmethod
    def _range(low, high, start, stop, tooltip):
        widget = ctk.ctkRangeWidget()
        widget.minimum, widget.maximum = low, high
        widget.minimumValue, widget.maximumValue = start, stop
        widget.singleStep = 1
        widget.decimals = 0
        widget.toolTip = tooltip
        return widget

    def ready(self) -> None:
        from ..dataset.render import available_stages
        from ..materials import THRESHOLD_MATERIALS
        from ..pipeline import SimulationSettings

        stages = available_stages(SimulationSettings(), THRESHOLD_MATERIALS)
        self.stages_edit.toolTip = _("Comma-separated stages stored per image; available: {stages}. Line "
                                     "integrals per material are always stored.").format(stages=", ".join(stages))

    def parameters_modified(self, parameters) -> None:
        has_ct = parameters is not None and parameters.ct is not None
        self.generate_button.enabled = has_ct and not self._running
        self.generate_button.toolTip = (_("Render the images into the output folder (resumes an unfinished run).")
                                        if has_ct else _("Select a CT volume first."))

    def on_cancel(self) -> None:
        self._cancel_requested = True
        self.cancel_button.enabled = False
        self.result_label.text = _("Cancelling after the current image...")

    def _request(self, overwrite: bool):
        from ..mrml.dataset_logic import DatasetRequest

        parameters = self.context.parameters()
        out = self.out_edit.currentPath.strip()
        if not out:
            raise InputError("No output folder is chosen for the dataset.", "Pick a new or empty folder.")
        alpha = (self.alpha_range.minimumValue, self.alpha_range.maximumValue)
        beta = (self.beta_range.minimumValue, self.beta_range.maximumValue)
        sample = (f"alpha={alpha[0]:g}:{alpha[1]:g},beta={beta[0]:g}:{beta[1]:g},sid={parameters.sid:g},"
                  f"sod={parameters.sod:g},n={self.count_spin.value}")
        size = int(self.size_spin.value)
        labels = self.labels_selector.currentNode()
        return DatasetRequest(
            out=out, ct_nodes=[parameters.ct],
            landmarks_nodes=[parameters.landmarks] if parameters.landmarks is not None else [],
            label_nodes=[labels] if labels is not None else [], sample=sample, jitter=self.jitter_edit.text,
            randomize=self.randomize_edit.text,
            stages=tuple(s.strip() for s in self.stages_edit.text.split(",") if s.strip()),
            width=size, height=size, pixel_spacing_mm=parameters.detectorSize / size, seed=int(self.seed_spin.value),
            kvp=parameters.kvp, overwrite=overwrite)

    def on_generate(self) -> None:
        from ..mrml.dataset_logic import generate_dataset

        self._cancel_requested = False
        self._running = True
        self.generate_button.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.visible = True
        self.progress_bar.value = 0
        self.result_label.text = _("Checking the inputs...")
        report = None
        try:
            with slicer.util.tryWithErrorDisplay(_("Dataset generation failed."), waitCursor=False):
                try:
                    report = generate_dataset(self._request(overwrite=False), progress=self._progress,
                                              cancel=lambda: self._cancel_requested)
                except InputError as error:
                    if "holds a different dataset" not in error.problem:
                        raise
                    if not slicer.util.confirmOkCancelDisplay(
                            _("{problem}\n\nReplace that dataset? Files the generator did not write are kept.")
                            .format(problem=error.problem), windowTitle=_("DeepDRR")):
                        self.result_label.text = _("Nothing was generated.")
                        return
                    report = generate_dataset(self._request(overwrite=True), progress=self._progress,
                                              cancel=lambda: self._cancel_requested)
        finally:
            self._running = False
            self.cancel_button.enabled = False
            self.progress_bar.visible = report is not None and not report.complete
            self.parameters_modified(self.context.parameters())
        if report is not None:
            self.result_label.text = self._summary(report)

    def _progress(self, done: int, total: int, message: str) -> None:
        if total:
            self.progress_bar.maximum = total
            self.progress_bar.value = done
            self.result_label.text = _("{message}: {done} of {total} images").format(message=message, done=done,
                                                                                     total=total)
        else:
            self.result_label.text = message
        slicer.app.processEvents()

    @staticmethod
    def _summary(report) -> str:
        lines = []
        if report.cancelled:
            lines.append(_("Cancelled: {done} of {total} shards are complete. Press 'Generate dataset' again with "
                           "the same settings to resume.").format(done=report.shards_done, total=report.shards_total))
        elif report.complete:
            lines.append(_("Wrote {count} images to {folder} ({rate:.1f} images/s). Load them with "
                           "DeepDRRSlicerLib.dataset.torch_data.ShardDataset.").format(
                               count=report.written, folder=report.out, rate=report.images_per_second))
        if report.failed:
            lines.append(_("{count} pose(s) gave no image (see report.json).").format(count=len(report.failed)))
        for ct in report.no_ray:
            lines.append(_("{poses} of {total} poses put no ray through the CT: check the angle ranges and the "
                           "isocentre.").format(poses=ct["poses"], total=ct["of"]))
        return "\n".join(lines)
