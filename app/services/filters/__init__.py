"""The filter language that search and segments share: its catalogue and SQL compiler."""
