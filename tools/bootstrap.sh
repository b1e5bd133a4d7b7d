# Installs what onguard needs into this checkout, idempotently: a Python venv (.venv), the pinned npm
# toolchain (Foundry 1.7.1, solcjs, OpenZeppelin), the pinned npm artifact packages (published bytecode the
# tests deploy) and the compiled contracts. Sourced by ./onguard and ./run-tests.
# Each step is skipped when its inputs have not changed since it last succeeded.
set -euo pipefail
ONGUARD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ONGUARD_ROOT"

say() { printf 'onguard setup: %s\n' "$*" >&2; }

stamp_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  say "needs Python 3.11 (found $("$python_bin" --version 2>&1)); set PYTHON=/path/to/python3.11"
  exit 2
fi
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || { say "needs $tool (Node.js 20+) on PATH"; exit 2; }
done

python_stamp=$(stamp_of pyproject.toml)
if [ "$(cat .venv/.onguard-stamp 2>/dev/null)" != "$python_stamp" ]; then
  say "installing Python dependencies into .venv (first run: about a minute)"
  "$python_bin" -m venv .venv
  # (this machine's pip config names mirror folders that may be absent: drop those warnings only)
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
  echo "$python_stamp" > .venv/.onguard-stamp
fi

npm_stamp=$(stamp_of package.json package-lock.json)
if [ "$(cat node_modules/.onguard-stamp 2>/dev/null)" != "$npm_stamp" ]; then
  say "installing Foundry 1.7.1, solcjs and OpenZeppelin from npm (package-lock.json)"
  # Foundry's binaries come as their own -linux-amd64 packages: no install script needs to run.
  npm ci --silent --no-audit --no-fund --ignore-scripts
  echo "$npm_stamp" > node_modules/.onguard-stamp
fi

artifacts_dir=.bootstrap/npm-artifacts
artifacts_stamp=$(stamp_of tools/npm-artifacts.lock)
if [ "$(cat "$artifacts_dir/.onguard-stamp" 2>/dev/null)" != "$artifacts_stamp" ]; then
  say "fetching the pinned npm artifact packages (tools/npm-artifacts.lock)"
  rm -rf "$artifacts_dir"
  mkdir -p "$artifacts_dir/.tarballs"
  grep -v '^[[:space:]]*\(#\|$\)' tools/npm-artifacts.lock | while read -r spec pinned; do
    tarball=$(npm pack "$spec" --silent --pack-destination "$artifacts_dir/.tarballs")
    actual=$(node -e 'const fs = require("fs"), crypto = require("crypto");
      process.stdout.write("sha512-" + crypto.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' \
      "$artifacts_dir/.tarballs/$tarball")
    if [ "$actual" != "$pinned" ]; then
      say "$spec: the tarball's digest $actual is not the one pinned in tools/npm-artifacts.lock"
      exit 1
    fi
    package_dir="$artifacts_dir/${spec%@*}"
    mkdir -p "$package_dir"
    tar -xzf "$artifacts_dir/.tarballs/$tarball" -C "$package_dir" --strip-components=1
  done
  rm -rf "$artifacts_dir/.tarballs"
  echo "$artifacts_stamp" > "$artifacts_dir/.onguard-stamp"
fi

if ! build_log=$(./node_modules/.bin/forge build 2>&1); then
  say "compiling the contracts failed:"
  printf '%s\n' "$build_log" >&2
  exit 1
fi
export PATH="$ONGUARD_ROOT/node_modules/.bin:$ONGUARD_ROOT/.venv/bin:$PATH"
