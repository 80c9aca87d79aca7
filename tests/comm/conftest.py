"""Puts this directory on sys.path, so the tests and the ranks they spawn can
import the shared rank-side helpers (comm_cases, fault_cases, ...) whatever
pytest's import mode (with --import-mode=importlib pytest adds nothing)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
