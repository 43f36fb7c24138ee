# Keep pytest's doctest collection away from modules that run on import (or need a framework).
collect_ignore = ["deferral/__main__.py", "backends", "docs", "bench", "site", "tests/sharded_worker.py"]
