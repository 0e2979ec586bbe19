"""The top floor: the run console a person watches while the pipeline runs."""
