"""The `pandalab` command: one dispatcher above every part (collector, learning, sim, store).

It stands above the packages it dispatches to and imports each lazily, so starting a collection
never loads the trainer; nothing below imports it.  `pandalab.cli` parses and dispatches,
`pandalab.data` implements ``pandalab data``, `pandalab.demo` runs ``pandalab demo`` (collect,
train, score) and `pandalab.train` is the glue of ``pandalab train`` / ``pandalab eval``.
"""
