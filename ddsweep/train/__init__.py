"""Training: the pack loop, its optimizers and its schedules."""
