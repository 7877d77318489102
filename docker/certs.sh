#!/usr/bin/env bash
# Make a certificate authority and a SuperLink server certificate with openssl.
#
#   docker/certs.sh OUT_DIR ADDRESS [ADDRESS ...]
#
# Every ADDRESS is a name clients use to reach the SuperLink: an IPv4/IPv6
# address (written IP:...) or a DNS name (written DNS:...); a bare value is
# taken as IP when it parses as one, DNS otherwise. localhost, 127.0.0.1 and
# the compose service name "superlink" are always added, so the ServerApp
# executor inside the server's compose network can verify the SuperLink too.
#
# Writes into OUT_DIR (created, must not already hold these files):
#   ca.crt      the CA certificate: give it to every SuperNode and to the CLI
#   ca.key      the CA private key: keep it offline, it signs server certs
#   server.pem  the SuperLink certificate (SAN = the addresses above)
#   server.key  the SuperLink private key (stays on the server machine)
#
# Options (environment): CERT_DAYS (default 365), CA_NAME (default
# "byzflower CA"). Requires openssl >= 1.1.1.
set -euo pipefail

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
out_dir=$1
shift
days=${CERT_DAYS:-365}
ca_name=${CA_NAME:-byzflower CA}

san_entry() {
    local address=$1
    case $address in
    IP:* | DNS:*) printf '%s' "$address" ;;
    *)
        if [[ $address =~ ^[0-9]+(\.[0-9]+){3}$ || $address == *:* ]]; then
            printf 'IP:%s' "$address"
        else
            printf 'DNS:%s' "$address"
        fi
        ;;
    esac
}

sans=("DNS:localhost" "IP:127.0.0.1" "DNS:superlink")
for address in "$@"; do
    entry=$(san_entry "$address")
    [[ " ${sans[*]} " == *" $entry "* ]] || sans+=("$entry")
done
san_list=$(IFS=,; printf '%s' "${sans[*]}")
# The subject's CN is the first address given (informative only: clients
# check the SAN list).
common_name=${1#*:}

mkdir -p "$out_dir"
for name in ca.crt ca.key server.pem server.key; do
    if [[ -e $out_dir/$name ]]; then
        echo "certs.sh: $out_dir/$name exists; refusing to overwrite it" >&2
        exit 1
    fi
done

umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -nodes -days "$days" \
    -keyout "$out_dir/ca.key" -out "$out_dir/ca.crt" \
    -subj "/CN=$ca_name" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -nodes \
    -keyout "$out_dir/server.key" -out "$out_dir/server.csr" \
    -subj "/CN=$common_name" 2>/dev/null

extensions=$(mktemp)
trap 'rm -f "$extensions"' EXIT
cat >"$extensions" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san_list
EOF

openssl x509 -req -sha256 -days "$days" -in "$out_dir/server.csr" \
    -CA "$out_dir/ca.crt" -CAkey "$out_dir/ca.key" -CAcreateserial \
    -extfile "$extensions" -out "$out_dir/server.pem" 2>/dev/null
rm -f "$out_dir/server.csr" "$out_dir/ca.srl"
chmod 644 "$out_dir/ca.crt" "$out_dir/server.pem"

echo "CA certificate:     $out_dir/ca.crt"
echo "server certificate: $out_dir/server.pem (SAN: $san_list)"
echo "server key:         $out_dir/server.key"
echo "CA key:             $out_dir/ca.key (keep it off the servers)"
