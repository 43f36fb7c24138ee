# Keep pytest's doctest collection away from modules that run on import.
collect_ignore = ["deferral/__main__.py", "backends", "docs", "bench", "site"]
