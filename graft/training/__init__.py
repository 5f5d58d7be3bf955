"""The training loop, fine-tuning strategies and their selection, schedules, checkpoints."""
