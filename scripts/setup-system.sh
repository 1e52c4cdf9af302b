#!/usr/bin/env bash
# The programs the test suite talks to, from Debian's packages, each only when missing: Dovecot
# (IMAP; pymap stands in without it), Postfix's smtp-sink/smtp-source (benchmarks), Chromium and
# its driver (browser tests), systemd-analyze (the unit file). Installs as root (CI, a fresh
# machine); otherwise says what is missing and carries on.
set -euo pipefail

need=()
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
command -v smtp-sink >/dev/null 2>&1 || need+=(postfix)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # postfix: only its smtp-sink/smtp-source tools are used; it is never started as a service.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "setup: missing ${need[*]}; install them (sudo apt-get install ${need[*]}) or the" \
       "tests that need them fail" >&2
fi
