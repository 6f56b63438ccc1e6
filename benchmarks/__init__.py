"""tgsession's benchmark suite: ``python -m benchmarks [--quick]``. See __main__.py."""
