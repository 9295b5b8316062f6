"""Use cases by domain: the rules, one transaction each, and every statement on the tables."""
