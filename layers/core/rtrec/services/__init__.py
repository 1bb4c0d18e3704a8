"""Services orchestrate ports; they hold no SDK code."""
