"""The dashboard's pages; each module has ``PATH``, ``TITLE``, ``NEEDS``, ``layout(sel, data)`` and
``register(app, data)``."""
