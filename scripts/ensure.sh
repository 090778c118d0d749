# Shared by the scripts: install what is missing, or say exactly what to install.
# Sourced, not executed.

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

# A command that fails under `set -e` names itself instead of ending the script silently.
set -o errtrace
trap 'rc=$?; printf "error: %s failed (exit %s) at %s:%s\n" "$BASH_COMMAND" "$rc" "${BASH_SOURCE[0]:-$0}" "$LINENO" >&2' ERR

# Stops with a message that says what to do; never a bare exit status.
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Installs Debian packages when running as root with apt; otherwise names them.
ensure_apt() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust stable from your distribution or rustup" >&2
    exit 1
  fi
  if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  fi
}

# npm packages of the repo root (binaryen's wasm-opt, tsc, playwright-core).
ensure_node_tools() {
  if ! command -v npm >/dev/null; then
    ensure_apt nodejs npm
  fi
  if [ ! -x node_modules/.bin/wasm-opt ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "installing npm packages (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
  # wasm-pack runs the first wasm-opt on PATH: binaryen from npm, never Debian's
  # (binaryen 108 silently breaks wasm-bindgen output).
  export PATH="$PWD/node_modules/.bin:$PATH"
}

# The wasm32 target, wasm-pack, and the wasm-bindgen CLI at exactly the version in Cargo.lock.
ensure_wasm_tools() {
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
    rustup target add wasm32-unknown-unknown
  fi
  # cargo installs into ~/.cargo/bin, which a fresh shell may not have on PATH yet.
  case ":$PATH:" in *":${CARGO_HOME:-$HOME/.cargo}/bin:"*) ;; *) export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH" ;; esac
  if ! command -v wasm-pack >/dev/null; then
    say "installing wasm-pack (cargo install wasm-pack)"
    # --locked first (reproducible); without it when the registry no longer
    # serves a version its lock file names.
    cargo install wasm-pack --locked || cargo install wasm-pack ||
      die "could not install wasm-pack: run 'cargo install wasm-pack'"
  fi
  local want have=""
  want=$(wasm_bindgen_version) || die "Cargo.lock names no wasm-bindgen version"
  # Not installed yet is the normal case on a fresh machine: no version, not an error.
  if command -v wasm-bindgen >/dev/null; then
    have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }') || have=""
  fi
  if [ "$have" != "$want" ]; then
    say "installing wasm-bindgen-cli $want (found: ${have:-none})"
    # Not --locked: its lock file names crate versions the registry may no longer serve.
    cargo install wasm-bindgen-cli --version "$want" --force ||
      die "could not install wasm-bindgen-cli: run 'cargo install wasm-bindgen-cli --version $want --force'"
  fi
}

# The wasm-bindgen version pinned in Cargo.lock (wasm-pack needs the CLI at exactly it).
wasm_bindgen_version() {
  local v
  v=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  [ -n "$v" ] && printf '%s\n' "$v"
}

# Debian's chromium and its driver, for the browser tests.
ensure_browser() {
  ensure_apt chromium chromium-driver
}

# schemathesis (PyPI), for the OpenAPI conformance run: pinned, in a virtual
# environment under the user's cache; python3 and its venv module from apt
# when missing. Sets SCHEMATHESIS to its `st` command.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/exechub/schemathesis-$SCHEMATHESIS_VERSION"
  if [ ! -x "$venv/bin/st" ]; then
    if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      ensure_apt python3 python3-venv
    fi
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv (pip)"
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"; }; then
      rm -rf "$venv"
      die "could not install schemathesis: run 'python3 -m venv $venv && $venv/bin/pip install schemathesis==$SCHEMATHESIS_VERSION'"
    fi
  fi
  export SCHEMATHESIS="$venv/bin/st"
}
