#!/usr/bin/env bash
# Debian packages the project needs. Installed when missing and we are root; named otherwise.
#  - libharfbuzz-subset0: WeasyPrint subsets fonts with it (without it, a silent fallback to
#    fontTools makes letters several times slower);
#  - libpango-1.0-0, libpangoft2-1.0-0: WeasyPrint's text layout;
#  - fonts-liberation2, fonts-dejavu-core: the sans fonts the letters are set in;
#  - poppler-utils: pdftoppm, with which the tests look at printed letters as bitmaps;
#  - qpdf: `qpdf --check`, the structural check a print house's preflight starts with;
#  - python3-venv: the virtualenv, made with Debian's Python when there is one (Makefile).
set -euo pipefail
packages=(python3-venv libharfbuzz-subset0 libpango-1.0-0 libpangoft2-1.0-0 fonts-liberation2 fonts-dejavu-core poppler-utils qpdf)
command -v dpkg-query >/dev/null || { echo "system-deps: not a Debian system; install: ${packages[*]}" >&2; exit 0; }
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing Debian packages: ${missing[*]}" >&2
  echo "system-deps: run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; }
