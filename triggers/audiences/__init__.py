"""Live audiences (docs/ads.md): who is in which named audience, as enter and
exit changes. ``record`` is the wire contract with the ad sinks, ``rules``
the conditions, ``tracker`` the sans-I/O membership evaluation."""
