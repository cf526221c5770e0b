"""`lightalign serve`: an OpenAI-compatible endpoint that post-edits another model's answers with the Aligner.

Light on import (no torch, no FastAPI): `lightalign.serve.app.create_app` builds the server.
"""
