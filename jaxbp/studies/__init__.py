"""The studies: each a ``Config`` dataclass, checked at construction, and
``run(config, out_dir)`` that writes its results, report and figures.

Studies sit on top of every other layer, and nothing in jaxbp imports them.
Scripts under ``experiments/`` only parse flags into a Config and call ``run``.
"""
