"""Loading, contracts, validation and the data quality gate."""
