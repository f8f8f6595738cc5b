"""Commands that print a signed, expiring credential for a try-out or a
support case: what a shop backend mints (``slot-sig``, ``inbox-token``)."""
