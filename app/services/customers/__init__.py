"""The customer file: profiles, codes, custom fields, visibility, search, merges, timeline."""
