"""The Qt side of the module panel: the only part of ``DeepDRRSlicerLib`` that imports qt or ctk.

Layers, each importing only those before it (``Testing/Python/test_layers.py`` checks this):

1. the engine (``DeepDRRSlicerLib`` outside ``mrml`` and ``gui``): no Slicer, no Qt;
2. ``DeepDRRSlicerLib.mrml``: MRML through ``slicer`` and ``vtk``, no Qt;
3. ``DeepDRRSlicerLib.gui`` (this package): Qt widgets, timers and dialogs, which run only inside Slicer;
4. ``DeepDRRSlicer.py``, the module file: metadata, parameter node, widget wiring, self-test.

The panel is built from sections, one file each; a section owns the widgets of one part of the
``.ui`` file (its buttons, enabled states and messages). To add one, write a ``PanelSection``
subclass in a new file here and list it in ``panel.panel_sections()``.

Modules (import them directly; this file imports nothing):

``panel``             ``PanelContext`` (what a section may use) and ``PanelSection`` (its hooks); the list of sections
``simulate_section``  the Simulate button: one render with a cancellable progress dialog
``carm_section``      the C-arm controls besides the bound sliders ("Centre C-arm on CT")
``display_section``   the stage selector: stages the last render did not compute are greyed out
``install_section``   the accelerators' status line and the "Install accelerators..." flow
``gpu_section``       the backend of each render (GPU or CPU, and why) and the opt-in "Install CuPy (GPU)..."
``dataset_section``   *Generate dataset*: pose ranges, count, stages, folder; progress bar, Cancel, resume
``binding``           binding the ``.ui`` widgets to the parameter node (with a tag that can be released)
``status``            the panel's status line
``progress``          a modal, cancellable progress dialog as a ``progress(fraction)`` callback
``timers``            ``QtTimerScheduler``: the live loop's coalescing timers on ``qt.QTimer``
``views``             the Fluoro layout in the application's layout manager; fitting the views
"""
