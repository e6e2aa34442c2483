"""Streaming services on Kafka, S3 and Triton: thin loops around the library."""
