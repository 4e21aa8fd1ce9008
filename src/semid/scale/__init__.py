"""The scale-out room: embed and assign Semantic IDs over catalogues that do not fit in memory.

- :mod:`~semid.scale.batches`: the pure per-batch steps (:class:`EncodeBatch`, :class:`EmbedBatch`), each a
  callable class that loads its model from a directory once per worker.
- :mod:`~semid.scale.assign`: :func:`assign_dataset`, streaming or on Ray Data, dedup per code bucket.
- :mod:`~semid.scale.embed`: :func:`embed_dataset`, streaming or on Ray Data.
- :mod:`~semid.scale.parts`: Parquet part files: listing, validation, seeded sampling, id uniqueness.

Ray is optional (``pip install 'semid[ray]'``); the local engine needs nothing beyond pyarrow.
"""
