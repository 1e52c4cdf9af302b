"""mailer: honours unsubscribe requests from the inbox and sends consent-aware campaigns."""
