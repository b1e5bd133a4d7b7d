"""Where this checkout keeps its build products: compiled contracts and the npm toolchain."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("ONGUARD_ROOT") or Path(__file__).resolve().parents[2])
ARTIFACTS_DIR = PROJECT_ROOT / "contracts" / "out"
POLICIES_DIR = PROJECT_ROOT / "policies"
