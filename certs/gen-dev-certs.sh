#!/usr/bin/env bash
# Generate a development CA and a server certificate for localhost/127.0.0.1.
#
# Usage: certs/gen-dev-certs.sh [--force] [OUT_DIR]
#   OUT_DIR defaults to certs/dev/ next to this script (gitignored).
#   Existing files are kept unless --force is given.
#
# Output (PEM): ca.crt, ca.key, server.crt, server.key (EC P-256, PKCS#8).
# For development and tests only: these keys are not secret and must not be
# used anywhere that matters.
set -euo pipefail

force=0
out_dir=""
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gen-dev-certs: unknown option: $arg" >&2; exit 2 ;;
        *)
            if [[ -n "$out_dir" ]]; then
                echo "gen-dev-certs: only one output directory may be given" >&2
                exit 2
            fi
            out_dir="$arg"
            ;;
    esac
done

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${out_dir:-$script_dir/dev}"

command -v openssl >/dev/null || { echo "gen-dev-certs: openssl not found" >&2; exit 1; }

files=(ca.crt ca.key server.crt server.key)
if [[ $force -eq 0 ]]; then
    all_present=1
    for f in "${files[@]}"; do
        [[ -s "$out_dir/$f" ]] || all_present=0
    done
    if [[ $all_present -eq 1 ]]; then
        echo "gen-dev-certs: certificates already present in $out_dir (use --force to regenerate)"
        exit 0
    fi
fi

mkdir -p "$out_dir"
# Build everything in a scratch dir and move it into place at the end, so an
# interrupted run never leaves a half-written set behind.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

# Development CA: EC P-256 key (PKCS#8), self-signed, 10 years.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days 3650 \
    -subj "/O=pgstrata development/CN=pgstrata dev CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$work/ca.crt"

# Server key and CSR.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/server.key"
openssl req -new -key "$work/server.key" \
    -subj "/O=pgstrata development/CN=localhost" \
    -out "$work/server.csr"

# Leaf extensions: rustls/webpki require SANs and reject CA:TRUE leaves.
cat > "$work/server.ext" <<'EXT'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EXT

# 825 days: the longest validity some TLS clients accept for a leaf.
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$work/server.ext" \
    -out "$work/server.crt" 2>/dev/null

openssl verify -CAfile "$work/ca.crt" "$work/server.crt" >/dev/null

for f in "${files[@]}"; do
    mv -f "$work/$f" "$out_dir/$f"
done
chmod 600 "$out_dir/ca.key" "$out_dir/server.key"
chmod 644 "$out_dir/ca.crt" "$out_dir/server.crt"

echo "gen-dev-certs: wrote ${files[*]} to $out_dir"
