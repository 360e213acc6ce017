#!/usr/bin/env bash
# Checks openapi.yaml against the live server. SERVER=vessel (the default)
# runs the real VMM process, `vessel --api-sock` (release build), whose VM
# is never started by random input (no kernel path exists), so its state
# rules answer too; SERVER=fake builds the fake_server example (the real
# HTTP server and router over a fake VMM that accepts every well-formed
# request), which reaches every body. Serves it on a Unix socket, forwards a local
# TCP port to it with socat (schemathesis speaks TCP only), and runs
# schemathesis 3.x with valid and invalid data and every check: no 5xx, each
# status and body as documented, invalid data refused.
# Needs python3 with venv, socat, and PyPI (the first run installs
# schemathesis into $SCHEMATHESIS_VENV). EXAMPLES sets the cases per path.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vessel/schemathesis-venv}
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    # schemathesis 3.39 breaks with hypothesis 6.130 and later.
    "$venv/bin/pip" install -q "schemathesis==3.39.16" "hypothesis<6.130"
fi
command -v socat >/dev/null || { echo "schemathesis.sh: socat is needed (apt-get install socat)" >&2; exit 1; }

dir=$(mktemp -d)
exclude=()
sock="$dir/api.sock"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

case "${SERVER:-vessel}" in
    fake)
        cargo build -q --release -p api --example fake_server
        "${CARGO_TARGET_DIR:-target}/release/examples/fake_server" "$sock" &
        ;;
    vessel)
        cargo build -q --release -p vessel
        vessel=$(realpath "${CARGO_TARGET_DIR:-target}/release/vessel")
        # PUT /logger and /metrics create the files they name, so random
        # paths are left to the fake VMM; relative ones land in $dir.
        exclude=(--exclude-path /logger --exclude-path /metrics)
        (cd "$dir" && exec "$vessel" --api-sock "$sock" 2>"$dir/vessel.log") &
        ;;
    *) echo "schemathesis.sh: SERVER is fake or vessel" >&2; exit 2 ;;
esac
fake=$!
trap 'kill $fake ${fwd:-} 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$sock" &
fwd=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

"$venv/bin/schemathesis" run crates/api/openapi.yaml \
    --base-url "http://127.0.0.1:$port" \
    --checks all --data-generation-method all \
    --hypothesis-max-examples "${EXAMPLES:-100}" \
    --hypothesis-derandomize --no-color "${exclude[@]}"
kill -0 "$fake" || { echo "schemathesis.sh: the server died" >&2; cat "$dir/vessel.log" 2>/dev/null; exit 1; }
if grep -q panicked "$dir/vessel.log" 2>/dev/null; then
    echo "schemathesis.sh: the server panicked" >&2; cat "$dir/vessel.log" >&2; exit 1
fi
