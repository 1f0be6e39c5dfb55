"""Experiment tracking: rank 0's MLflow run (``tracker``), its background sender, and the
``tracking-server`` / ``compare`` commands. Only :mod:`.mlflow_store` imports mlflow, and only when a
run is tracked or compared, so importing this package costs nothing."""
