"""The filter language shared by customer search, segments and exports."""
