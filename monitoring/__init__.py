"""Served traffic against the model's training rows: the monitor command and its checks."""
