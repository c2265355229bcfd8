"""The benchmark workflow: `metarl bench run | park | finish | release | report` (cli.py), one
module each, sharing the result file's dataclasses (result.py)."""
