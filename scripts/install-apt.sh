#!/usr/bin/env bash
# Install the Debian packages listed in a file (first word of each non-comment line).
# Safe to rerun: only missing packages are installed. Needs root, or sudo without a password.
set -euo pipefail
list=${1:?usage: install-apt.sh PACKAGE_LIST}
mapfile -t wanted < <(sed -e 's/#.*//' "$list" | awk 'NF {print $1}')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "${pkg%%=*}" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && { echo "apt: all ${#wanted[@]} packages present"; exit 0; }

if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo -n); else
  echo "apt: missing packages ${missing[*]}; run this script as root" >&2; exit 1
fi
echo "apt: installing ${missing[*]}"
# dumpcap must not become setuid: captures run as root inside the session's namespace.
echo "wireshark-common wireshark-common/install-setuid boolean false" | "${sudo[@]}" debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
