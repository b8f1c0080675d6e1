#!/usr/bin/env bash
# Certificates for the TLS tests, made fresh by each test run with the
# openssl command (never checked in): a CA; a silo certificate for
# 127.0.0.1, localhost and granary-silo, usable as server and as client (silos
# dial each other with it); a client certificate; a second CA with its own
# silo certificate (rotation); a rogue CA with a client certificate nobody
# trusts.
#   make_certs.sh DIR
set -euo pipefail
d=$1
mkdir -p "$d"
cd "$d"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
ca() { # NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 30 -subj "/CN=$2" -out "$1.crt" 2>/dev/null
}
leaf() { # NAME CA CN EXT
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -sha256 -days 30 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
silo_ext='subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:granary-silo
extendedKeyUsage=serverAuth,clientAuth'
ca ca "granary test CA"
leaf silo ca silo "$silo_ext"
leaf client ca client "extendedKeyUsage=clientAuth"
ca ca2 "granary test CA 2"
leaf silo2 ca2 silo "$silo_ext"
leaf client2 ca2 client "extendedKeyUsage=clientAuth"
ca rogue "rogue CA"
leaf rogue-client rogue client "extendedKeyUsage=clientAuth"
# Both CAs in one bundle: what a silo trusts during a CA rotation.
cat ca.crt ca2.crt > both-ca.crt
chmod 644 ./*.crt ./*.key
