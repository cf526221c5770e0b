"""Evaluation: run the same prompts through base / adapter / Aligner / URIAL / endpoint systems,
judge the replies, and write a report (JSON, Markdown, PNG). Nothing heavy is imported here."""
