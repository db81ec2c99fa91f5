"""One router per resource: prediction, models, operations."""
