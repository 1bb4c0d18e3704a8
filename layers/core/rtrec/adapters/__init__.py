"""Adapters: the only code that touches SDKs (boto3, faiss, onnxruntime, opensearch-py)."""
