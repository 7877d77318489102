#!/usr/bin/env bash
# Make the SuperExec secret: the file a SuperLink (or SuperNode) and its
# executors share, so that only those executors can take runs from its
# runtime API (flower-* --superexec-auth-secret-file FILE).
#
#   docker/superexec-secret.sh FILE [OWNER]
#
# Writes 32 random bytes as 64 hexadecimal characters, without a newline
# (Flower reads the file as exact raw bytes), with mode 600. Run it on the
# machine that uses the secret: it never needs to travel. With OWNER (e.g.
# 49999, the containers' user) the file is given to that user, which needs
# root. An existing FILE is never overwritten. Needs only coreutils.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
secret_file=$1
owner=${2:-}

if [[ -e $secret_file ]]; then
    echo "superexec-secret.sh: $secret_file exists; refusing to overwrite it" >&2
    exit 1
fi
mkdir -p "$(dirname "$secret_file")"
umask 077
# od prints the bytes as hex in groups; tr joins them into one line.
od -An -v -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secret_file"
if [[ $(wc -c <"$secret_file") -ne 64 ]]; then
    rm -f "$secret_file"
    echo "superexec-secret.sh: could not read 32 bytes from /dev/urandom" >&2
    exit 1
fi
if [[ -n $owner ]]; then
    chown "$owner:$owner" "$secret_file"
fi
echo "SuperExec secret: $secret_file (mode 600${owner:+, owner $owner})"
