"""Prompt data built from real, locally installed sources (see hvd.data.suites); nothing is downloaded."""
