"""HTTP controllers, grouped by domain."""
