"""Where networks run besides torch: the ONNX contract every graph is checked against, torch -> ONNX conversion,
and the onnxruntime sessions that stand in for torch modules (same call, same descriptor)."""
