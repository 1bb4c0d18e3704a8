"""The two-tower training job: data, model, training, evaluation, ONNX export, MLflow registry, promotion."""
