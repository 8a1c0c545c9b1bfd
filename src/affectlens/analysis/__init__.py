"""Analyses: they read run folders, never models, so they run in seconds and repeat without a GPU."""
