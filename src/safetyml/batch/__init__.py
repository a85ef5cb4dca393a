"""Batch scoring: zone risk maps with Getis-Ord Gi* hotspots, and scoring whole files (pandas or Dask)."""
