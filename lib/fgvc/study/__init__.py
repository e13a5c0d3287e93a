"""The study on top of the library: profiles and config, one run and its records, the train CLI,
fast paths, the grid and Slurm, the lr sweep, reproduction, results and statistics, the report,
figures, complexity and cost, CAM scoring and the gallery, notebook helpers, readings.

Imports the library (`fgvc.data`, `fgvc.models`, `fgvc.layers`, `fgvc.methods`, `fgvc.engine`,
`fgvc.cam`, `fgvc.io`, `fgvc.paths`); the library never imports this package (the import-linter
contract in pyproject.toml).
"""
