"""`pipx install .` gives a working onguard: the wheel built from this checkout carries the compiled contracts and
the demo policies, and an onguard imported from it (outside any checkout) finds the GuardianModule's ABI there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from onguard.paths import PROJECT_ROOT


def test_the_wheel_ships_the_compiled_contracts_and_an_installed_onguard_reads_them(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(PROJECT_ROOT), "--no-deps",
                    "--quiet", "--disable-pip-version-check", "-w", str(tmp_path / "dist")], check=True,
                   cwd=tmp_path, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("onguard-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(installed)
    assert "onguard/artifacts/GuardianModule.sol/GuardianModule.json" in names
    assert "onguard/artifacts/Vault.sol/Vault.json" in names
    assert "onguard/demo_policies/vault-drain.toml" in names
    assert not any("/test/" in name or name.endswith(".t.sol") for name in names)

    probe = ("import onguard.paths as p, onguard.chain.module as m; "
             "print(p.ARTIFACTS_DIR); print(len(m.module_abi().function_signatures()))")
    shown = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                           cwd=tmp_path, env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"})
    where, functions = shown.stdout.split()
    assert Path(where) == installed / "onguard" / "artifacts"
    assert int(functions) > 5
