"""The HTTP edge in front of the routers: middleware, problems, responses, OpenAPI, the read lane."""
