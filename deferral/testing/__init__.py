"""Reusable checks for backend plugins (grows into the conformance suite)."""
