"""Where onguard finds its build products: in a checkout, the compiled contracts (contracts/out), the npm
toolchain and the demo policies; in an installed package (`pipx install .`), the copies shipped inside it."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = Path(os.environ.get("ONGUARD_ROOT") or PACKAGE_DIR.parents[1])
_IN_CHECKOUT = (PROJECT_ROOT / "contracts" / "src").is_dir()
ARTIFACTS_DIR = PROJECT_ROOT / "contracts" / "out" if _IN_CHECKOUT else PACKAGE_DIR / "artifacts"
POLICIES_DIR = PROJECT_ROOT / "policies" if _IN_CHECKOUT else PACKAGE_DIR / "demo_policies"
