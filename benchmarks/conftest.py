"""``pytest benchmarks --benchmark-only`` runs a short default set (a few minutes on a 2-core CPU);
``--bench-full`` runs the whole sweep (every backend, mode, precision and shape; large on a CPU too)."""


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true", default=False,
                     help="the whole benchmark sweep: the baselines at the study shape, every mode and precision, "
                          "and the large shape (on a CPU: about 20 more minutes)")
