"""Video2World generation (single and DreamGen batch), evaluation metrics, sampling and
plotting hooks; see docs/inference.md."""
