"""The ingest job: load one uploaded S3 object of prices into PostgreSQL."""
