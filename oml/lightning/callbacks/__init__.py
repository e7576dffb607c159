"""Lightning callbacks: metric computation and logging at the end of validation."""
