"""What a run did, for people: MLMD queries (runs.py) apart from the text, views and HTML
report built on them."""
