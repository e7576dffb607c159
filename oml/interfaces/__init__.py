"""Abstract base classes: the contracts between datasets, models, miners, losses and metrics."""
