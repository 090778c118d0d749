# Shared by the scripts: install what is missing, or say exactly what to install.
# Sourced, not executed.

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

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
  command -v wasm-pack >/dev/null || { say "installing wasm-pack"; cargo install wasm-pack --locked; }
  local want have
  want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')
  if [ "$have" != "$want" ]; then
    say "installing wasm-bindgen-cli $want"
    cargo install wasm-bindgen-cli --version "$want" --force
  fi
}

# Debian's chromium and its driver, for the browser tests.
ensure_browser() {
  ensure_apt chromium chromium-driver
}
