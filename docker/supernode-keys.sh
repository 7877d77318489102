#!/usr/bin/env bash
# Make one ECDSA P-384 key pair per SuperNode for SuperNode authentication.
#
#   docker/supernode-keys.sh OUT_DIR NAME [NAME ...]
#
# Writes OUT_DIR/NAME (private key: stays on the machine that runs that
# SuperNode) and OUT_DIR/NAME.pub (public key: registered with the SuperLink
# from the laptop by `flwr supernode register OUT_DIR/NAME.pub <connection>`).
# Existing keys are never overwritten: a key that was registered, then
# unregistered, is refused by the SuperLink for good; make a new NAME instead.
# Requires ssh-keygen (Debian package openssh-client).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
out_dir=$1
shift

mkdir -p "$out_dir"
for name in "$@"; do
    if [[ ! $name =~ ^[A-Za-z0-9._-]+$ ]]; then
        echo "supernode-keys.sh: key name '$name' must match [A-Za-z0-9._-]+" >&2
        exit 1
    fi
    if [[ -e $out_dir/$name || -e $out_dir/$name.pub ]]; then
        echo "supernode-keys.sh: $out_dir/$name exists; refusing to overwrite it" >&2
        exit 1
    fi
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "$name" -f "$out_dir/$name"
    echo "private key: $out_dir/$name   public key: $out_dir/$name.pub"
done
