"""Blob stores: content-addressed bytes on the local filesystem or S3."""
