# Sourced by scripts that start the project's servers with --port=0.
# wait_for_server PORT_FILE: waits for a server started with
# --port_file=PORT_FILE to write its port and answer health checks (with
# $bin/common/rpc/rpc_probe); prints its address, 127.0.0.1:PORT.
wait_for_server() {
  for _ in $(seq 1 300); do [ -s "$1" ] && break; sleep 0.1; done
  local address="127.0.0.1:$(cat "$1")"
  for _ in $(seq 1 100); do
    "$bin/common/rpc/rpc_probe" --target="$address" health >/dev/null 2>&1 && break; sleep 0.1
  done
  echo "$address"
}
