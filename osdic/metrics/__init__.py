"""Quality metrics and their pretrained-weight checks."""
