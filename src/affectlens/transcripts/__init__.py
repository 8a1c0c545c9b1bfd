"""Agent transcripts as a corpus of faces: formats (Claude Code, Codex, chat JSONL), redaction, the journal hook.

Everything here is pure text in, records out: no model, no run folder. Redaction happens before a record
leaves this package, so nothing unredacted is ever stored or sent.
"""
