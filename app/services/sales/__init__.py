"""Sales: pipelines and their stages, opportunities and their moves, the board."""
