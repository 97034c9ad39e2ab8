"""Where the tests find what the repository ships: one definition each."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEECH_ROOT = REPO_ROOT / "zoo" / "assets" / "speech"  # committed espeak-ng speech: <lang>/{train,dev,test}/ Kaldi dirs
