"""estimation package."""
