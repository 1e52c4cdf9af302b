#!/usr/bin/env bash
# The programs the test suite talks to, from Debian's packages, each only when missing: Dovecot
# (IMAP; pymap stands in without it), Postfix's smtp-sink/smtp-source (benchmarks), Chromium and
# its driver (browser tests), systemd-analyze (the unit file), PostgreSQL 15's server programs
# (the store's second engine; tests/postgres.py runs its own cluster in a temp folder). Installs
# as root (CI, a fresh machine); otherwise says what is missing and carries on.
set -euo pipefail

need=()
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
command -v smtp-sink >/dev/null 2>&1 || need+=(postfix)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# Debian keeps initdb off PATH, in /usr/lib/postgresql/N/bin.
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
  need+=(postgresql-15)
[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # postfix: only its smtp-sink/smtp-source tools are used; it is never started as a service.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # postgresql: the tests start their own throwaway cluster, so the package need not create
  # (and start) the system "main" cluster; postgresql-common's createcluster.conf includes this
  # drop-in folder.
  if [[ " ${need[*]} " == *" postgresql-15 "* ]]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/mailer-tests.conf
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "setup: missing ${need[*]}; install them (sudo apt-get install ${need[*]}) or the" \
       "tests that need them fail" >&2
fi
