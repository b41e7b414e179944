"""Exporting zoo models: ``torch.export`` programs and ONNX files with a dynamic batch, height and width.

``program``: :func:`export_program` (``torch.export``), :func:`build_model` (a name, weights, classifier or
features), the dynamic shapes. ``onnx``: :func:`export_onnx` and ``gmamba-zoo export``. How each part of the models
traces, and the latencies measured in onnxruntime: docs/export.md.
"""
from .onnx import OnnxCheckError, OnnxExport, check_onnx, export_onnx
from .program import build_model, dynamic_image_shapes, example_input, export_program, min_export_size
