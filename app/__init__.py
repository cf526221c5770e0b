"""The Gradio app (`lightalign app`): base, base + adapter and the Aligner's correction side by side.

Modules: config (AppConfig), models (one base, adapter switched on/off, lazy Aligner), compare
(one comparison as a stream of snapshots), rewordings (one prompt in several wordings, side by
side), diff (word diff for gr.HighlightedText), examples (example prompts + an optional rule judge
plugin), ui (the gr.Blocks page and launch), cli.
Nothing here imports torch or gradio at package import time.
"""
