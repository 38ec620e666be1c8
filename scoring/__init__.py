"""Scoring whole registries: files (``heart-score``), data frames and distributed engines.

``scoring.frame.score_frame`` scores a pandas partition for Spark's
``mapInPandas`` or Dask's ``map_partitions``; ``scoring.cli`` is the
command; ``scoring.core`` is the NumPy step they share with the service.
pyarrow, pandas and Dask come with the ``bulk`` extra; importing this
package needs none of them.
"""
