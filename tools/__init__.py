"""Tools for people working on the model and its data: feature ablation, schema bootstrap."""
