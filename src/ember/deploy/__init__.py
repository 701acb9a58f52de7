"""Deploy: bundles (one verifiable file per trained model), reference profiles and exports.

Nothing here imports an optional library at import time: ONNX, onnxscript and ONNX Runtime load
inside the export functions that use them.

Example:
    >>> from ember.deploy import open_bundle, export_model
    >>> bundle = open_bundle("digits.ember")  # doctest: +SKIP
    >>> report = export_model(bundle.model, bundle.task, bundle.spec, "digits.onnx")  # doctest: +SKIP
"""

from ember.deploy.bundle import Bundle, BundleError, load, open_bundle, package, write_bundle
from ember.deploy.export import ExportError, ExportReport, export, export_model, export_onnx, export_torch
from ember.deploy.profile import ReferenceProfile, build_profile, embed, input_features

__all__ = [
    "Bundle",
    "BundleError",
    "ExportError",
    "ExportReport",
    "ReferenceProfile",
    "build_profile",
    "embed",
    "export",
    "export_model",
    "export_onnx",
    "export_torch",
    "input_features",
    "load",
    "open_bundle",
    "package",
    "write_bundle",
]
