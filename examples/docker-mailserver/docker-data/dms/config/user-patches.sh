#!/bin/bash
# docker-mailserver runs this script at every start, after it has written its own Postfix
# configuration and before Postfix starts. It adds a submission service on port 10587 that only
# sasl-gate talks to (sasl-gate.yaml: backends.smtp).
#
# Why a service of its own, and why here:
#   - docker-mailserver's `submission` (587) requires STARTTLS before anything else; sasl-gate
#     speaks plain SMTP to the backend over the host's internal bridge, so it needs a listener
#     without that requirement, and nothing but sasl-gate should reach such a listener.
#   - config/postfix-master.cf can only change services that already exist (each line goes to
#     `postconf -P`, which ignores an unknown service), so the service is created here.
#   - Port 10587 is not published in compose.yaml, and only the backend network reaches it.
#
# sasl-gate logs token users in with AUTH PLAIN as its Dovecot master account on the user's
# behalf (sasl-gate.yaml: backends.smtp.login: master) and names the real client in a PROXY v2
# header (backends.smtp.proxyProtocol: true, here smtpd_upstream_proxy_protocol=haproxy), so
# Postfix logs and limits the client, not sasl-gate. smtpd_authorized_xclient_hosts is EMPTY on
# purpose: a host in that list may send `XCLIENT LOGIN=<anyone>`, which Postfix takes as
# "authenticated as <anyone>" with no password. sasl-gate needs no such right, and without it not
# even a bug in sasl-gate could make a client someone else. (`sasl-gate doctor` warns if XCLIENT
# is offered to it.)
#
# Everything else mirrors docker-mailserver's own submission service, so mail from token users
# and password users is treated like any authenticated submission (sender ownership with
# SPOOF_PROTECTION=1, DKIM signing via ORIGINATING, header clean-up).
# Running it again replaces the same entries, so restarts are fine.
set -euo pipefail

postconf -M '10587/inet=10587 inet n - n - - smtpd'
postconf -P \
  '10587/inet/syslog_name=postfix/sasl-gate' \
  '10587/inet/smtpd_tls_security_level=none' \
  '10587/inet/smtpd_tls_auth_only=no' \
  '10587/inet/smtpd_sasl_auth_enable=yes' \
  '10587/inet/smtpd_sasl_type=dovecot' \
  '10587/inet/smtpd_upstream_proxy_protocol=haproxy' \
  '10587/inet/smtpd_authorized_xclient_hosts=' \
  '10587/inet/smtpd_reject_unlisted_recipient=no' \
  '10587/inet/smtpd_sasl_authenticated_header=yes' \
  '10587/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject' \
  '10587/inet/smtpd_relay_restrictions=permit_sasl_authenticated,reject' \
  '10587/inet/smtpd_sender_restrictions=$mua_sender_restrictions' \
  '10587/inet/smtpd_discard_ehlo_keywords=' \
  '10587/inet/milter_macro_daemon_name=ORIGINATING' \
  '10587/inet/cleanup_service_name=sender-cleanup'

echo 'user-patches.sh: added the Postfix submission service 10587 for sasl-gate (PROXY v2, master login, no XCLIENT)'
