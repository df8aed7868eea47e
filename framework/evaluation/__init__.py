"""Evaluation: fixed eval sets (evalset), metrics as components (metrics, fvd, judges), the
runner and the HTML report; `python -m framework.eval` is the command (docs/eval.md)."""
