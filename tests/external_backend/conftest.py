# deferral_boxed is installed into a temporary site directory by tests/test_external_backend.py;
# importing it from here (doctest collection) would shadow that installed copy.
collect_ignore = ["deferral_boxed"]
