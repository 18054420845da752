"""MRML adapters: the engine's inputs and outputs as Slicer nodes.

Everything in this subpackage imports ``slicer`` (MRML) and ``vtk`` besides
numpy and the engine, and never Qt, so it runs both inside Slicer and on the
``slicer-core`` wheel (real MRML without a GUI), which is how CI tests it.
The Qt side (``DeepDRRSlicerLib.gui``) and the module file (``DeepDRRSlicer.py``) sit on top.

Modules (import them directly; this file imports nothing so that importing
the engine never pulls in ``slicer``):

``volume_nodes``    CT volume node -> engine ``Volume`` (IJK->RAS and parent transforms)
``landmark_nodes``  markups fiducials -> engine landmarks; projected landmarks on the detector
``carm_transform``  C-arm pose <-> ``vtkMRMLLinearTransformNode``; interaction handles
``output_nodes``    one single-slice volume node per stage, placed at the detector plane (+ log display companions)
``carm_models``     source, detector outline and beam frustum models
``layout``          the "Fluoro" slice view, oriented like a radiograph, and its layout
``scheduler``       coalescing bursts of modification events (timers are injected)
``logic``           ``DeepDRRLogic``: the Python console API and the live update loop
``dependencies``    the module's Python requirements: check and install on request
``dataset_logic``   *Generate dataset*: scene nodes -> the engine's dataset generator
``panel_parameters`` the module panel's parameters -> C-arm set-up and engine settings
"""
