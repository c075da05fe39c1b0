"""Tunebench's Textual workbench: reads the engine, never the other way round."""

import os

# Textual draws at most TEXTUAL_FPS frames a second (60 unless set), so a key that comes just after a frame
# waits for the next slot before it shows. The workbench draws only what changed, so a higher cap costs no
# frames while a run trains, and halves that wait (docs/perf-log.md, cause 37). Textual reads the variable
# when it is imported, which the workbench's modules do after this; a TEXTUAL_FPS of the user's is kept.
os.environ.setdefault("TEXTUAL_FPS", "120")
