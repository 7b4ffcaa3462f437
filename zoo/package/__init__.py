"""Model packages on disk: verification, building (weights, ONNX, test tensors, card)."""
