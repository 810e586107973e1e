#!/usr/bin/env bash
# Runs every `grpcurl` command of docs/grpcurl.md, as written, against real
# servers (a dataset service, a coordinator on it, and an averaging peer),
# once in plain text on loopback and once over TLS, with `grpcurl` standing
# for dd_grpcurl, a client that knows none of the project's protos (every
# type comes from server reflection). A command must succeed and print JSON
# (or the service list); one marked "# fails: CODE" must fail with CODE.
set -euo pipefail
bin="${TEST_SRCDIR:-$PWD/..}/${TEST_WORKSPACE:-__main__}"
doc="$bin/docs/grpcurl.md"
export DD_GRPCURL="$bin/common/rpc/dd_grpcurl"
work="${TEST_TMPDIR:-$(mktemp -d)}/grpcurl_doc"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
pids=()
trap 'kill "${pids[@]}" 2> /dev/null || true' EXIT
grpcurl() { "$DD_GRPCURL" "$@"; }

wait_for_port() {
  local i
  for i in $(seq 1 100); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  echo "FAIL: no port in $1"
  exit 1
}

# The grpcurl lines of the document's sh blocks (continuations joined).
commands=$(awk '/^```sh/ {in_sh = 1; next} /^```/ {in_sh = 0} in_sh' "$doc" |
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -E '^grpcurl ')
count=$(printf '%s\n' "$commands" | wc -l)
[ "$count" -ge 15 ] || { echo "FAIL: only $count grpcurl commands found in the document"; exit 1; }

"$bin/trainer/tools/make_shapes_dataset" --out_dir=data --num_samples=64 --width=32 --height=32 \
  > /dev/null
openssl rand -hex 32 > token
openssl rand -hex 32 > admin_token
echo '{"run_id": "grpcurl-doc", "target_batch_size": 16}' > run.json
# A CA and one certificate for loopback (what make_certs.sh gives each service).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key \
  -out ca.pem 2> /dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=server -keyout server.key -out server.csr \
  2> /dev/null
echo "subjectAltName=DNS:localhost,IP:127.0.0.1" > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
  -extfile san.ext -out server.pem 2> /dev/null

run_mode() {
  local mode=$1 tls_flags=() host=127.0.0.1
  rm -rf "$mode" && mkdir "$mode"
  if [ "$mode" = tls ]; then
    tls_flags=(--tls_cert=server.pem --tls_key=server.key --tls_ca=ca.pem)
    TLS="-cacert ca.pem"
    host=localhost
  else
    TLS=-plaintext
  fi
  "$bin/services/dataset/dataset_server" --dataset_dir=data --work_dir="$mode/work" \
    --host=127.0.0.1 --port=0 --port_file="$mode/port" --chunk_size=16 \
    --auth_token_file=token "${tls_flags[@]}" > "$mode/dataset.log" 2>&1 &
  pids+=($!)
  wait_for_port "$mode/port"
  D="$host:$(cat "$mode/port")"
  "$bin/services/coordinator/coordinator" --config=run.json --db_dir="$mode/ledger" \
    --dataset_address="$D" --host=127.0.0.1 --port=0 --port_file="$mode/cport" \
    --auth_token_file=token --admin_token_file=admin_token "${tls_flags[@]}" \
    > "$mode/coordinator.log" 2>&1 &
  pids+=($!)
  wait_for_port "$mode/cport"
  C="$host:$(cat "$mode/cport")"
  # A peer's averaging service (it waits for a round spec that never comes).
  "$bin/trainer/averaging/averaging_member" --listen=127.0.0.1:0 --port_file="$mode/pport" \
    --spec_file="$mode/never" --length=16 --deadline_s=120 --auth_token_file=token \
    "${tls_flags[@]}" > "$mode/peer.log" 2>&1 &
  pids+=($!)
  wait_for_port "$mode/pport"
  TOKEN=$(cat token)
  ADMIN=$(cat admin_token)

  local line n=0 expected out status
  while IFS= read -r line; do
    n=$((n + 1))
    # The peer's section sets P to an example address; use the real one.
    P="$host:$(cat "$mode/pport")"
    expected=$(sed -n 's/.*# fails: \([A-Z_]*\).*/\1/p' <<< "$line")
    status=0
    out=$(eval "$line" 2>&1) || status=$?
    if [ -n "$expected" ]; then
      if [ $status -eq 0 ] || ! grep -q "^$expected" <<< "$out"; then
        echo "FAIL [$mode] expected $expected from: $line"; echo "$out"; exit 1
      fi
    elif [ $status -ne 0 ]; then
      echo "FAIL [$mode] $line"; echo "$out"; exit 1
    elif ! grep -qE '^\{|^grpc\.|^distdiff\.' <<< "$out"; then
      echo "FAIL [$mode] neither JSON nor a service list from: $line"; echo "$out"; exit 1
    fi
    echo "ok [$mode] ${line:0:110}"
  done <<< "$commands"
  echo "[$mode] $n commands as documented"
  # Fixtures only: their graceful shutdown is tested elsewhere.
  kill -KILL "${pids[@]}" 2> /dev/null || true
  wait "${pids[@]}" 2> /dev/null || true
  pids=()
}

run_mode plaintext
run_mode tls
echo "PASSED"
