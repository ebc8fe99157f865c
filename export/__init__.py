"""The build toolchain: PyTorch or official ONNX -> a u2edge ONNX (later, engines).

Installed as ``u2edge.export``. The runtime never imports it.
"""

from .onnx_export import OUTPUT_NAMES, ExportResult, check_imgsz, export_onnx

__all__ = ["OUTPUT_NAMES", "ExportResult", "check_imgsz", "export_onnx"]
