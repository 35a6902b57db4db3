"""Free-text queries over map instances (the ``query_objects`` service's engine).

Main entry points: :func:`create_query_engine` (config -> engine), :class:`ObjectQueryEngine`
(calibrated sentence-embedding matching), :class:`RegistryQueryEngine` (registry phrases only),
``QueryEngine.update_instances`` and ``QueryEngine.query_objects``. The optional CLIP path lives in
``panoptic_mapper.core.query.clip_embeddings`` (imported on demand: it needs torch).
"""
from panoptic_mapper.core.query.engine import (InstanceTableUpdate, ObjectQueryEngine,
                                               QueryConfig, QueryEngine, QueryMatch,
                                               QueryResult, RegistryQueryEngine,
                                               create_query_engine)

__all__ = ["InstanceTableUpdate", "ObjectQueryEngine", "QueryConfig", "QueryEngine", "QueryMatch",
           "QueryResult", "RegistryQueryEngine", "create_query_engine"]
