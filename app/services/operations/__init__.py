"""What the operations probes read from the database: the schema's revision and the queues' depths."""
