"""DeepDRRSlicerLib: fluoroscopy simulation from CT (the engine of DeepDRRSlicer), usable without Slicer or Qt."""
