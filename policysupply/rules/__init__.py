"""policysupply's default deployment-gate rules (``gate.rego`` + ``data.json``).

Load them with :meth:`policysupply.gate.Gate.default_rules`; this package only
exists so the files ship with the wheel.
"""
