"""starscale: distributed star-rating training jobs on Spark and Horovod."""
from setuptools import find_packages, setup

setup(
    name="starscale",
    version="0.1.0",
    description="Spark + Horovod batch jobs: full-corpus LSTM vs LR on Amazon review stars",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"starscale": ["data/*.txt", "data/*.yaml", "templates/*.j2"]},
    python_requires=">=3.11,<3.12",
    # Runtime dependencies are pinned in requirements/*.txt and installed by `make setup`;
    # horovod must be built after TensorFlow, which install_requires cannot order.
    install_requires=[],
    entry_points={"console_scripts": ["starscale=starscale.cli:main"]},
)
