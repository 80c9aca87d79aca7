"""Lets the comm tests import their shared rank-side helpers (comm_cases)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
