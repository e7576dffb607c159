"""Config-driven pipelines: train, validate and predict with an extractor; train a re-ranking postprocessor."""
