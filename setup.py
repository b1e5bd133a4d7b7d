"""Ships the compiled contracts (contracts/out, built by `forge build`: `./onguard` or `./run-tests` runs it) and
the demo policies inside the package, so an installed onguard (`pipx install .`) finds its GuardianModule ABI."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SOURCES = ROOT / "contracts" / "src"
COMPILED = ROOT / "contracts" / "out"


class BuildWithArtifacts(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's contracts/out itself (see onguard.paths)
        package = Path(self.build_lib) / "onguard"
        missing = []
        for source in sorted(SOURCES.rglob("*.sol")):
            compiled = COMPILED / source.name
            if not compiled.is_dir():
                missing.append(source.name)
                continue
            shutil.copytree(compiled, package / "artifacts" / source.name, dirs_exist_ok=True)
        if missing:
            raise SystemExit(f"the contracts are not compiled ({', '.join(missing)} missing from contracts/out): "
                             "run `./onguard --help` once in this checkout (it compiles them), then install again")
        shutil.copytree(ROOT / "policies", package / "demo_policies", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithArtifacts})
