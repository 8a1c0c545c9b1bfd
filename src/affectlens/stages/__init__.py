"""Stages: a model and stimuli in, a run folder out; each resumes where it stopped."""
