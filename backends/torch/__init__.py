"""The torch backend of deferral (being written)."""
