"""Rego engines behind one small seam (see ``base``).

``opa`` runs the real ``opa`` binary; ``embedded`` runs rego-cpp through
``regopy``. Engine selection lives here; each engine's transport lives in its
own module and is imported lazily.
"""
