"""Sweeps on Optuna, outside the ranks: ask for a trial, write its spec, run the ordinary
`torchrun ... -m ddpcifar.train spec.json`, follow its evaluations for the pruner, read its
summary, tell (docs/sweeps.md).

    config    the sweep file (pydantic) and its checks against the run spec
    storage   journal file or database, the study's lock, heartbeats, dead trials
    trial     one trial's runs (one per replicate seed), followed and scored
    worker    the ask-run-tell loop
    show      trials, best, importances, plots
    cli       `python -m ddpcifar.sweep run|show|schema`
"""
