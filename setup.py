"""corpus-matcher: sharded ScaNN top-K matching of record corpora on Apache Beam.

Ships the ``beam_jobs`` and ``transforms`` packages only; pins the stack that is known to resolve
together (tensorflow-transform accepts exactly one TensorFlow minor version).
"""

from setuptools import find_packages, setup

STACK = [
    "tensorflow==2.21.0",
    "tensorflow-transform==1.21.0",
    "tfx-bsl==1.21.0",
    "apache-beam[gcp,dataframe]==2.77.0",
    "scann==1.4.2",
    "tensorflow-hub==0.16.1",
    "numpy>=2,<3",
    "pandas>=2,<3",
    "pyarrow>=14",
    "scipy>=1.11",
    "matplotlib>=3.8",
    "rapidfuzz>=3.6,<4",  # pairwise scoring: Jaro-Winkler and token-sort ratios over aligned lists
]

setup(
    name="corpus-matcher",
    version="0.1.0",
    description="Top-K nearest-neighbour record linkage and deduplication on Apache Beam with ScaNN.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["beam_jobs", "beam_jobs.*", "transforms", "transforms.*"]),
    package_data={"transforms": ["*.json"]},
    install_requires=STACK,
    extras_require={"test": ["pytest>=8", "ruff>=0.6"], "bench": ["scikit-learn", "faiss-cpu"]},
    entry_points={"console_scripts": ["corpus-match=beam_jobs.cli:main"]},
)
