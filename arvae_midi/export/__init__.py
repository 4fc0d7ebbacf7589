"""The ONNX exporter (torch side): graph building, parity check, writing the model file."""
