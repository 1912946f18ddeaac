"""Internals of the admission service (see ``policysupply.admission`` and ADRs 0018, 0019)."""
