"""`mailer doctor`: will the big mailbox providers accept our campaigns?

One run looks at the whole chain receivers judge and answers each link with pass, warn or
fail, what was found and the exact fix (the record to publish, the setting to change):

    run         diagnose (everything, for the CLI), startup_report (DNS and messages, for
                the daemon's start: logs a line per failure, never stops it)
    dns_checks  SPF (spf), the DKIM key, DMARC and alignment, MX, the unsubscribe host,
                reverse DNS, MTA-STS/TLS-RPT/BIMI; asked through resolver ([doctor] nameservers)
    servers     SMTP (TLS that verifies, login), IMAP (login, folders), the unsubscribe URL
    messages    a sample campaign message and confirmation, verified with dkimpy
    reputation  complaint and hard-bounce rates, opt-outs waiting; the daemon's pause decision
    records     SPF, DMARC and DKIM key parsing (pure)      report  Check, Report, table, JSON
    probe       the path the doctor GETs on the public listener
"""
