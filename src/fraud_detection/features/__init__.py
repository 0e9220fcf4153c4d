"""Point-in-time feature engineering and the Feast feature store."""
