"""The tensorflow backend of deferral (being written)."""
