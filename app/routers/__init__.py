"""HTTP routes: parse, authenticate, call one service function, shape the response."""
