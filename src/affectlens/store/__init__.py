"""Run folders: the atomic writer, the manifest, and typed readers and writers per run kind."""
