#!/bin/sh
# The images' HEALTHCHECK: asks the gRPC health service of the server in this
# container. DD_HEALTH_PORT names its port; DD_TLS_CA, when set, the CA that
# signed its certificate (every service certificate from make_certs.sh also
# names localhost and 127.0.0.1). Health needs no token.
set -eu
port="${DD_HEALTH_PORT:?DD_HEALTH_PORT is not set}"
if [ -n "${DD_TLS_CA:-}" ]; then
  exec rpc_probe --target="localhost:$port" --tls_ca="$DD_TLS_CA" --timeout_s=4 health
fi
exec rpc_probe --target="127.0.0.1:$port" --timeout_s=4 health
