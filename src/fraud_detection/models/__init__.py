"""Model construction and the model bundle format."""
