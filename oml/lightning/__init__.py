"""Lightning glue: modules, callbacks and config pipelines (needs the ``pipelines`` extra)."""
