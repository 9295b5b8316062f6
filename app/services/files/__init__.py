"""Files kept in PostgreSQL for every process: import uploads and export results."""
