"""What people decided about the model and its data, and the one audit log of it: a pause of
serving, contaminated stretches of data, approvals of a model before it is pushed. Stored as
append-only records that serving, the pipeline and the tools all read (records.py)."""
