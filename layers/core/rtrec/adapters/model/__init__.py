"""Model adapters: the ONNX Runtime towers and the loader of a published model folder."""
