# All metadata lives in pyproject.toml. The C++ CPU kernel (csrc/) is compiled on first use with
# torch.utils.cpp_extension and ninja, not here, so that installing never needs torch at build time.
from setuptools import setup

setup()
