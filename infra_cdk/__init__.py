"""The rtrec CDK app (Python): the stacks under `stacks/`, the Lambda layer build in `layers.py`, the entry point `app.py`."""
