"""Routing: the rules in force, and the decision taken for each completed series."""
