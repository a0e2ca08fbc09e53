"""Deployment runtimes and precision recipes: ONNX Runtime, OpenVINO, AMP, QAT int8."""
