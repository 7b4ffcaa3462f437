"""Prediction: runners (torch, ONNX Runtime), tiling, pre/post-processing ops, layouts."""
