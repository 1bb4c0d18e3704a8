"""rtrec: a serverless real-time recommender (the shared core package, shipped as the `core` layer)."""

__version__ = "0.1.0"
