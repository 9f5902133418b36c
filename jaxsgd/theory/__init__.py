"""Models of SGD with known answers.

    nqm   the noisy quadratic model: exact expected dynamics, steps to target, Monte Carlo
"""
