"""DeepDRRSlicerLib: fluoroscopy simulation from CT (the engine of DeepDRRSlicer), usable without Slicer or Qt."""

__version__ = "0.1.0"  # the package version; pyproject.toml reads it from here
