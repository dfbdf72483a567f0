"""dicomnode: a DICOM node beside the PACS that receives, routes, runs models and sends back."""

__version__ = "0.1.0"

__all__ = ["__version__"]
