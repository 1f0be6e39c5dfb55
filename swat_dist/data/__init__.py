"""Data, one floor per folder: pixels/ <- sources/ <- loaders/, convert/ <- sets/ <- commands.py, bench.py (CLI).
May import config, files and progress; never train/, tracking/ or cluster/ (tests/test_imports.py)."""
