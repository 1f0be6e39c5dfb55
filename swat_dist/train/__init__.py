"""Training: the run entry point, the loop, the DeepSpeed engine, optimizer, checkpoints, evaluation."""
