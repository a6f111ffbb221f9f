"""Import TensorFlow without its start-up banner.

TensorFlow prints notes about oneDNN and CPU instructions to file descriptor 2 while it is
imported, before its own logging is set up, so neither `TF_CPP_MIN_LOG_LEVEL` nor Python's
logging can silence them. The CLI imports it once, up front, for the commands that need it,
with descriptor 2 captured; anything that is not a known start-up note is written back, so a
real import error still reaches the user.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

# Substrings of TensorFlow's informational start-up lines (none of them needs action).
STARTUP_NOTES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "rebuild TensorFlow with the appropriate compiler flags",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
    "Could not find cuda drivers on your machine",
    "cuda_executor.cc",
)


def is_startup_note(line: str) -> bool:
    return any(note in line for note in STARTUP_NOTES)


def import_tensorflow_quietly(module: str = "tensorflow") -> None:
    """Import TensorFlow (if installed and not yet imported), keeping only unexpected output."""
    if module in sys.modules or importlib.util.find_spec(module) is None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [
                line for line in text.splitlines() if line.strip() and not is_startup_note(line)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
