"""Puts this directory on sys.path, so the spawned ranks can import the shared
rank-side helpers (fsdp_cases) whatever pytest's import mode."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
