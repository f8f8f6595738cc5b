"""Who a message may reach: the user directory, consent and do-not-contact, and consent over HTTP."""
