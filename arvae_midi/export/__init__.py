"""ONNX exporter (needs torch) and the onnxruntime engine (never imports torch)."""
