"""The sweep engine: every run of a batch-size group as one compiled, sharded program.

    sampling    minibatch indices from (run key, step): epoch shuffling or with replacement
    evaluation  the evaluation schedule (in examples or steps) and full-set evaluation
    training    one run as pure functions: the step, the evaluation, the probe dispatch
    sharding    devices, the mesh over runs, run-sharded arrays, a group's compiled programs
    progress    the progress bar
    results     labelled xarray results of a sweep (SweepResult)
    folder      the results folder: files, one pytree format, checkpoints, the fingerprint
    sweep       run_sweep: validate, open the folder, run the groups in chunks, save
"""
