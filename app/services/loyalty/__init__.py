"""Loyalty: the program and levels, members' points (ledger and lots), redemptions and level reviews."""
