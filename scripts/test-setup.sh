#!/usr/bin/env bash
# Tests the set-up path itself: runs the `ensure_*` functions of
# scripts/ensure.sh with a PATH that lacks each tool in turn (stub `cargo`,
# `dpkg`, `id` record what they are asked to do), and checks that each one
# installs what is missing or stops with the exact command to run — never a
# bare exit status. Needs nothing installed; run by scripts/test.sh first.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# A bin directory holding only the basic tools the scripts use.
sys="$work/sys"
mkdir -p "$sys"
for tool in bash awk grep cat rm mkdir chmod dirname sed head tr env touch ls printf; do
  real=$(command -v "$tool") && ln -sf "$real" "$sys/$tool"
done

# A stub that logs its arguments; `cargo install X` creates a working X.
stub_cargo() {
  local bin=$1 fail=${2:-}
  cat >"$bin/cargo" <<EOF
#!/usr/bin/env bash
echo "cargo \$*" >>"$work/calls"
if [ "\$1" = install ]; then
  [ -n "$fail" ] && exit 101
  tool=\$2; [ "\$tool" = wasm-bindgen-cli ] && tool=wasm-bindgen
  mkdir -p "\$CARGO_HOME/bin"
  printf '#!/usr/bin/env bash\necho "%s %s"\n' "\$tool" "\$4" >"\$CARGO_HOME/bin/\$tool"
  chmod +x "\$CARGO_HOME/bin/\$tool"
fi
EOF
  chmod +x "$bin/cargo"
}

# Runs `$2` (a snippet using ensure.sh) in a clean environment with `$1` as
# the extra bin directory; records status and output.
run() {
  local bin=$1 snippet=$2
  : >"$work/calls"
  env -i HOME="$work/home" CARGO_HOME="$work/cargo-home" PATH="$bin:$sys" \
    bash -c "cd '$root' && set -euo pipefail && source scripts/ensure.sh && $snippet" \
    >"$work/out" 2>&1
  status=$?
}

check() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok - $name"
  else
    failed=$((failed + 1))
    echo "not ok - $name (status $status)"
    sed 's/^/    | /' "$work/out" "$work/calls"
  fi
}

fresh() {
  rm -rf "$work/bin" "$work/cargo-home" "$work/home"
  mkdir -p "$work/bin" "$work/cargo-home/bin" "$work/home"
}

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)

# 1. A machine with cargo only: wasm-pack and the exact wasm-bindgen-cli get installed.
fresh
stub_cargo "$work/bin"
run "$work/bin" ensure_wasm_tools
check "installs wasm-pack and wasm-bindgen-cli $want when neither is there" \
  bash -c "[ $status = 0 ] && grep -q 'cargo install wasm-pack' '$work/calls' \
    && grep -q 'cargo install wasm-bindgen-cli --version $want' '$work/calls'"

# 2. wasm-bindgen at another version: replaced by the locked one.
fresh
stub_cargo "$work/bin"
printf '#!/usr/bin/env bash\necho "wasm-bindgen 0.0.1"\n' >"$work/cargo-home/bin/wasm-bindgen"
printf '#!/usr/bin/env bash\n' >"$work/cargo-home/bin/wasm-pack"
chmod +x "$work/cargo-home/bin/"*
run "$work/bin" ensure_wasm_tools
check "replaces a wasm-bindgen of another version" \
  bash -c "[ $status = 0 ] && ! grep -q 'install wasm-pack' '$work/calls' \
    && grep -q 'install wasm-bindgen-cli --version $want' '$work/calls'"

# 3. The right version already there: nothing is installed.
fresh
stub_cargo "$work/bin"
printf '#!/usr/bin/env bash\necho "wasm-bindgen %s"\n' "$want" >"$work/cargo-home/bin/wasm-bindgen"
printf '#!/usr/bin/env bash\n' >"$work/cargo-home/bin/wasm-pack"
chmod +x "$work/cargo-home/bin/"*
run "$work/bin" ensure_wasm_tools
check "installs nothing when the tools are there" bash -c "[ $status = 0 ] && ! grep -q install '$work/calls'"

# 4. An install that fails names the command to run.
fresh
stub_cargo "$work/bin" fail
run "$work/bin" ensure_wasm_tools
check "a failed install says what to run" \
  bash -c "[ $status != 0 ] && grep -q \"run 'cargo install wasm-pack\" '$work/out'"

# 5. No cargo at all: says how to get Rust.
fresh
run "$work/bin" ensure_rust
check "no cargo: says to install Rust" bash -c "[ $status != 0 ] && grep -q 'install Rust stable' '$work/out'"

# 6. Missing Debian packages without root: the exact apt-get line.
fresh
printf '#!/usr/bin/env bash\nexit 1\n' >"$work/bin/dpkg"
printf '#!/usr/bin/env bash\necho 1000\n' >"$work/bin/id"
chmod +x "$work/bin/"*
run "$work/bin" "ensure_apt redis-server nats-server"
check "missing packages without root: the apt-get line" \
  bash -c "[ $status != 0 ] && grep -q 'sudo apt-get install redis-server nats-server' '$work/out'"

# 7. No npm and not root: names nodejs and npm.
fresh
printf '#!/usr/bin/env bash\nexit 1\n' >"$work/bin/dpkg"
printf '#!/usr/bin/env bash\necho 1000\n' >"$work/bin/id"
chmod +x "$work/bin/"*
run "$work/bin" ensure_node_tools
check "no npm: names the packages to install" \
  bash -c "[ $status != 0 ] && grep -q 'sudo apt-get install nodejs npm' '$work/out'"

# 8. A failing command is named, not a bare exit status (the ERR trap).
fresh
run "$work/bin" "false"
check "a failing step is named" bash -c "[ $status != 0 ] && grep -q 'error: false failed' '$work/out'"

# 9. No python3 and not root: names the packages for the schemathesis venv.
fresh
printf '#!/usr/bin/env bash\nexit 1\n' >"$work/bin/dpkg"
printf '#!/usr/bin/env bash\necho 1000\n' >"$work/bin/id"
chmod +x "$work/bin/"*
run "$work/bin" ensure_schemathesis
check "no python3: names python3 and python3-venv" \
  bash -c "[ $status != 0 ] && grep -q 'sudo apt-get install python3 python3-venv' '$work/out'"

# 10. python3 there: a venv under the cache with the pinned schemathesis.
fresh
cat >"$work/bin/python3" <<'STUB'
#!/usr/bin/env bash
# `python3 -m venv DIR` makes DIR/bin/pip, which logs and "installs" st.
echo "python3 $*" >>"$CALLS"
[ "$1" = -m ] || exit 0
mkdir -p "$3/bin"
printf '#!/usr/bin/env bash\necho "pip $*" >>"%s"\ntouch "%s/bin/st"; chmod +x "%s/bin/st"\n' "$CALLS" "$3" "$3" >"$3/bin/pip"
chmod +x "$3/bin/pip"
STUB
chmod +x "$work/bin/python3"
run "$work/bin" "CALLS='$work/calls' && export CALLS && ensure_schemathesis && echo st=\$SCHEMATHESIS"
check "installs the pinned schemathesis into a venv under the cache" \
  bash -c "[ $status = 0 ] && grep -q 'pip install -q schemathesis==' '$work/calls' \
    && grep -q 'st=$work/home/.cache/exechub/schemathesis-.*/bin/st' '$work/out'"

echo "set-up: $passed passed, $failed failed"
[ "$failed" = 0 ]
