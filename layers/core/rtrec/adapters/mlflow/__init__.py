"""MLflow adapters (imported only where mlflow is installed: the training job, the local stack)."""
