"""A run's life, in one torch-free package: its directory, its states, its reports, its launch.

    rundir      the run directory writer (status, metrics, samples, summary) and its claim
    report      what both engines report: evaluations, the best one, summary.json, the end
    stopping    SIGTERM/SIGINT turned into a clean stop at a step boundary
    reader      RunInfo for every run directory (and sweep trials), old formats included
    select      filters and sort keys (the CLI's and the dashboard's)
    launch      the ordinary torchrun command, queued run directories, launch.json
    queue       a queue and slots per machine in the runs directory, and its server
    supervise   the detached process that runs a launched command and answers for it
    control     stop, resume, clone, cancel, tag
    cli         `python -m ddpcifar.runs`

Both engines, the CLI, the sweeps and the dashboard use it; it imports neither torch nor the
engines (tests/test_runs_cli.py checks that in a fresh interpreter).
"""
