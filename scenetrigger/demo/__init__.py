"""The demo: the persona clickstream, what the demo would send, its live delivery, its page and its webhook sink."""
