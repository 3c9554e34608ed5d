"""Format-agnostic machinery: the sample model, splits, shards, images, masks, the pipeline.

Nothing in `converter.core` imports a source or a sink.
"""
