"""The match job's stages, as ``beam_jobs.match_corpora.build_pipeline`` calls them in order.

Each stage function applies its steps (composites and DoFns from ``transforms``) to the pipeline and
returns a NamedTuple whose every field is always there, with the stage's own ``dead_letters``
(build_pipeline flattens them once). The mode branches (link or dedup, vectors or an embedding
model, a kept index or an append, a scorer, clusters, the audit and tuning) are decided inside the
stages, from the frozen config. Wiring only: the stages hold no DoFns of their own, and their step
labels are the job's stable top-level labels (a stage is not a composite, so its steps keep them).

read (``read``) -> place and build (``index``) -> search (``search``) -> score, write, record
(``outputs``).
"""
